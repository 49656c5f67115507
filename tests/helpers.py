"""Small helpers shared by tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
TASK_FILES = Path(__file__).parent / "tasks"
ACTIVELAB = str(Path(sys.executable).with_name("activelab"))  # the console script

# A small network so a real training run on digits takes a second or two.
# A small network, and no logged model at the end (its export and MLflow's environment check
# cost a fresh worker ~5 s of CPU per run); test_a_run_reads_well_in_mlflow checks that one.
FAST = {
    "trainer.hidden_dims": "[32]",
    "trainer.batch_size": "256",
    "trainer.recon_images": "4",
    "trainer.log_model": "false",
}


def wait_until(
    check: Callable[[], T], timeout: float = 60.0, interval: float = 0.1, message: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy (never asserts on time itself)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


def mlflow_client(lab: Any) -> Any:
    """A plain MLflow client on the lab's store, for tests that check what reached MLflow
    (activelab itself calls MLflow only through `activelab.tracking`)."""
    from mlflow import MlflowClient

    return MlflowClient(lab.settings.tracking_uri)


def drop_task_file(name: str, folder: Path) -> Path:
    """Copy one of tests/tasks/*.py into a watched folder."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copyfile(TASK_FILES / name, target)
    return target


STEPS_PER_EPOCH = 10


def logged_run(lab: Any, model: Any, lr: str, scale: float, tags: dict | None = None) -> str:
    """A finished training run as any trainer would log it: step losses, epoch marks,
    epoch figures, params and the labels it used."""
    from mlflow.entities import Metric, Param

    from activelab import keys

    client = mlflow_client(lab)
    run = client.create_run(
        model.id,
        run_name=f"{model.name} #1",
        tags={keys.RUN_KIND: "train", keys.RUN_LABELED_COUNT: "12",
              keys.LABELS_DIGEST: "abc123def456789", keys.EPOCHS_TOTAL: "3", **(tags or {})},
    )  # fmt: skip
    run_id = run.info.run_id
    start = run.info.start_time
    metrics = []
    for step in range(1, 3 * STEPS_PER_EPOCH + 1):
        metrics.append(Metric("loss/total", scale / step, start + step * 100, step))
        if step % STEPS_PER_EPOCH == 0:
            epoch = step // STEPS_PER_EPOCH
            metrics.append(Metric("epoch", epoch, start + step * 100, step))
            metrics.append(Metric("epoch/loss/total", scale / epoch, start + step * 100, epoch))
            metrics.append(Metric("eval/classification/accuracy", 0.5 + epoch / 10 * scale,
                                  start + step * 100, epoch))  # fmt: skip
    params = [Param("trainer.lr", lr), Param("trainer.batch_size", "256")]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.set_terminated(run_id, "FINISHED")
    return run_id


class KillableServer:
    """A private `mlflow server` a test can kill -9 and start again on the same port."""

    def __init__(self, root: Path) -> None:
        from activelab.mlflow_server import free_port

        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Any = None

    def start(self) -> KillableServer:
        from activelab.mlflow_server import start_mlflow_server

        self.root.mkdir(parents=True, exist_ok=True)
        self.server = start_mlflow_server(
            f"sqlite:///{self.root / 'server.db'}",
            artifacts_destination=str(self.root / "artifacts"),
            port=self.port,
            log_path=self.root / "server.log",
        ).wait_ready()
        return self

    def kill(self) -> None:
        """kill -9 of the server and its workers."""
        import os
        import signal

        os.killpg(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(30)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def run_cli(
    lab: Any, *args: str, timeout: float = 120, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`activelab ...` in a second process on `lab`'s store, as another person (or script)
    would run it."""
    command = [ACTIVELAB, "--tracking-uri", lab.settings.tracking_uri,
               "--home", str(lab.settings.home), *args]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


# task files whose import never ends (issue 33): a loop, and a call blocked in C
HANGING_FILES = {
    "spin.py": "X = 0\nwhile True:\n    X += 1\n",  # Python code: stopped
    "sleeper.py": "import time\ntime.sleep(3600)\n",  # blocked in C: left behind
}


def drop_hanging_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in HANGING_FILES.items():
        (folder / name).write_text(source)
