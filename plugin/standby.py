"""A warm trainer: one worker process kept ready between runs.

Starting a worker costs ~5 s before its first step (Python, torch, MLflow, scikit-learn and
torch's optimizer machinery import). The warm worker pays that once: it imports everything,
says `activelab-ready` on its stdout and waits on its stdin for the path of a launch spec;
after each run it says ready again. A launch hands the spec to it when it is idle (`take`);
otherwise (busy with another run, gone, or started under other settings) the launch starts a
worker of its own as before. The app starts the warm worker when it starts; a script's first
launch starts one once its own worker has exited, so the import work never competes with a
running training. `ACTIVELAB_WARM_WORKER=0` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

READY = b"activelab-ready"
FINISHING = b"activelab-finishing"  # its run has ended; the evaluation after it follows
# A launch waits this long for a warm worker that is finishing (it is seconds from idle;
# a cold start costs ~5 s and competes with it for the cores).
FINISHING_WAIT_S = 30.0
ENABLED_ENV = "ACTIVELAB_WARM_WORKER"
# Environment variables that change what a worker loads: a warm worker started under other
# values is not used.
_ENV_PREFIXES = ("ACTIVELAB_", "MLFLOW_", "PYTHON")


def enabled() -> bool:
    return os.environ.get(ENABLED_ENV, "1") != "0"


def _relevant_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}


class WarmWorker:
    """The worker process, whether it is idle, and the environment it was started in."""

    def __init__(self, home: Path) -> None:
        folder = Path(home) / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "warm-worker.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "activelab.worker", "--standby"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # only READY lines: its output goes to each run's log
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self.env = _relevant_env()
        self.idle = threading.Event()
        self.finishing = threading.Event()
        threading.Thread(target=self._listen, name="activelab-warm-worker", daemon=True).start()

    def _listen(self) -> None:
        for line in self.process.stdout:
            if line.strip() == FINISHING:
                self.finishing.set()
            elif line.strip() == READY:
                self.finishing.clear()
                self.idle.set()

    @property
    def usable(self) -> bool:
        return self.process.poll() is None and self.env == _relevant_env()

    def hand(self, spec_path: Path) -> bool:
        """Give it a run if it is idle (or finishing one); False if it is busy or gone."""
        if not self.usable:
            return False
        if not self.idle.is_set() and not (
            self.finishing.is_set() and self.idle.wait(FINISHING_WAIT_S)
        ):
            return False
        self.idle.clear()
        try:
            self.process.stdin.write(f"{spec_path}\n".encode())
            self.process.stdin.flush()
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Closing its stdin ends it once its current run (if any) is done."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()


_lock = threading.Lock()
_warm: WarmWorker | None = None


def ensure(home: Path) -> None:
    """Start the warm worker unless a usable one exists (or warm workers are off)."""
    global _warm
    if not enabled():
        return
    with _lock:
        if _warm is not None and _warm.usable:
            return
        if _warm is not None:
            _warm.close()
        _warm = WarmWorker(home)


def take(spec_path: Path) -> subprocess.Popen | None:
    """The warm worker's process, now running `spec_path`; None if it cannot take it."""
    with _lock:
        if _warm is not None and _warm.hand(spec_path):
            return _warm.process
    return None


def is_warm(process: subprocess.Popen | None) -> bool:
    """True for the warm worker's process (it outlives its runs)."""
    return process is not None and _warm is not None and process is _warm.process


def ensure_after(process: subprocess.Popen, home: Path) -> None:
    """Once `process` (a worker of its own) exits, make sure the warm worker exists."""
    if not enabled() or is_warm(process):
        return

    def wait_then_warm() -> None:
        process.wait()
        ensure(home)

    threading.Thread(target=wait_then_warm, name="activelab-warm-start", daemon=True).start()


def shutdown() -> None:
    """Let the warm worker go (the app calls this when it stops)."""
    global _warm
    with _lock:
        warm, _warm = _warm, None
    if warm is not None:
        warm.close()


def warm_up() -> None:
    """Import what a training run needs, in the warm worker, before any spec arrives."""
    import mlflow
    import mlflow.pytorch
    import pandas
    import torch
    from sklearn.neighbors import NearestNeighbors

    import activelab.models
    import activelab.tasks.ssvae
    import activelab.tasks.ssvae_network

    del mlflow, pandas, NearestNeighbors, activelab  # imported for their start-up cost
    # the first optimizer imports torch's compiler stack (~1.5 s): do it now
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
