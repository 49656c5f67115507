"""Where a run's worker runs: the launcher-backend plugin interface and the `local` backend.

The launcher creates the MLflow run, then a backend starts `python -m activelab.worker` for it.
From then on the run reports, is stopped and is found dead through MLflow alone, so the app and
the CLI follow a run without reaching the machine or cluster it runs on. Built-ins: `local`
(a child process of the launching machine, the default) and `ray` (a Ray job, in
`activelab.tasks.ray_backend`); plugins add others (Kubernetes, Slurm) with `register_backends`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelab import keys, standby
from activelab.component import Component

if TYPE_CHECKING:
    from activelab.config import ModelConfig
    from activelab.worker import LaunchSpec

DEFAULT_BACKEND = "local"


class Job:
    """A started worker, as far as the launching process can see it."""

    def exit_reason(self) -> str | None:
        """Why the worker is gone though its run is still active, or None while it may live."""
        return None

    def wait(self, timeout: float) -> None:
        """After the run has ended: let the worker finish (it evaluates after training)."""


class Backend(Component):
    """Starts workers somewhere. Subclass it, set `kind`, declare its options as `param`
    parameters (an address, resources), and register the class with `register_backends`.
    One instance is made per launch from that launch's options."""

    def check(self, tracking_uri: str, config: ModelConfig) -> None:
        """Refuse, before the run exists, what cannot work here (raise InvalidConfigError
        saying what to do): a missing library, an unreachable address, data or a tracking
        store the worker could not reach."""

    def run_tags(self) -> dict[str, str]:
        """Tags the run gets so anyone can see where it runs."""
        tags = {keys.BACKEND: self.kind}
        address = getattr(self, "address", None)
        if address:
            tags[keys.BACKEND_ADDRESS] = str(address)
        return tags

    def start(self, spec: LaunchSpec, tracking: Any) -> Job:
        """Start the worker for `spec` (the run exists in MLflow); `tracking` may record on
        the run where the worker runs."""
        raise NotImplementedError


class LocalJob(Job):
    """The worker as a child process of this process, or forked by the warm worker."""

    def __init__(self, process: subprocess.Popen | standby.ForkedWorker, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def exit_reason(self) -> str | None:
        if self.process.poll() is None:
            return None
        code = self.process.returncode
        reason = "The trainer exited" + (
            f" with code {code}" if code != standby.UNKNOWN_EXIT_CODE else ""
        )
        return reason + " before ending its run" + f"; see {self.log_path}." + self._log_tail()

    def _log_tail(self, lines: int = 5) -> str:
        if not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return "\n" + "\n".join(tail) if tail else ""

    def wait(self, timeout: float) -> None:
        self.process.wait(timeout=timeout)


def run_folder(home: str | Path, run_id: str) -> Path:
    """Where a run trained on this machine keeps its spec, its worker's log and its end mark."""
    return Path(home) / "runs" / run_id


def end_mark(home: str | Path, run_id: str) -> Path:
    """A file the worker writes once the run's end is recorded in MLflow: a launcher on the
    same machine waits on it with a stat instead of reading the run from the store."""
    return run_folder(home, run_id) / "ended"


class LocalBackend(Backend):
    """A worker process on this machine (the default)."""

    kind = "local"

    def start(self, spec: LaunchSpec, tracking: Any) -> LocalJob:
        folder = run_folder(spec.home, spec.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        spec_path = folder / "spec.json"
        spec_path.write_text(spec.to_json())
        log_path = folder / "worker.log"
        env = {**os.environ, "MLFLOW_TRACKING_URI": spec.tracking_uri, "PYTHONUNBUFFERED": "1"}
        # forked by the warm worker, when one is ready
        process: subprocess.Popen[bytes] | standby.ForkedWorker | None = standby.take(
            spec_path, env
        )
        if process is None:
            with log_path.open("ab") as log:
                # Its own session: Ctrl-C in a terminal reaches the launcher, which asks for a
                # graceful stop, instead of killing the trainer mid-step.
                spawned = subprocess.Popen(
                    [sys.executable, "-m", "activelab.worker", str(spec_path)],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )  # fmt: skip
            standby.ensure_after(spawned, Path(spec.home))
            process = spawned
        record_process(tracking, spec.run_id, process.pid)
        return LocalJob(process, log_path)


def record_process(tracking: Any, run_id: str, pid: int) -> None:
    """Name the process that trains `run_id`, so whoever looks can tell whether it lives."""
    import psutil

    started = psutil.Process(pid).create_time()
    tracking.set_run_tags(
        run_id,
        {
            keys.PID: str(pid),
            keys.HOST: socket.gethostname(),
            keys.PROCESS_STARTED: f"{started:.3f}",
        },
    )
