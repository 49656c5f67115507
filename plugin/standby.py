"""A warm trainer: one process with everything imported that forks a worker per run.

Starting a worker costs ~5 s and ~9 CPU-s before its first step (Python, torch, MLflow,
scikit-learn and torch's optimizer machinery import). The warm worker pays that once: it
imports those libraries and activelab's built-in plugin modules (nothing of a model's, no
third-party plugin: each worker loads those, so a new or changed one is seen), says
`activelab-ready` on its stdout and waits on its stdin for launches, one JSON line each: the
spec's path and the launcher's environment and folder. For each it forks a child that takes
that environment, becomes a worker of its own (own session, own pid recorded on the run, its
output in the run's worker.log) and runs the spec; the warm worker answers `pid N` and waits
for the next launch. So runs launched at once all start warm, and one warm worker serves
launches made under any settings (a test's home, another tracking server).

The app starts the warm worker when it starts; a script's first launch starts one once its
own worker has exited, so the import work never competes with a running training. It yields
as a worker does (`ACTIVELAB_WORKER_NICE` of its own start); each forked worker then takes
its launch's value (raising the priority again needs privileges: else it stays, with a warning).
`ACTIVELAB_WARM_WORKER=0` turns that off (`start` still starts one on request). Linux only
(see `supported`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

READY = b"activelab-ready"
PID_PREFIX = b"pid "  # `pid N`: the worker forked for a launch
EXIT_PREFIX = b"exit "  # `exit N CODE`: that worker has ended
ENABLED_ENV = "ACTIVELAB_WARM_WORKER"
# What the warm worker imported with: a launcher under other values starts a worker of its own.
_IMPORT_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")
# How long a launch waits for the warm worker to answer with its child's pid (a fork takes
# milliseconds; a warm worker still importing does not answer before it is ready).
ANSWER_TIMEOUT_S = 10.0
# How long a look at an ended forked worker waits for the warm worker's word on its exit code.
EXIT_CODE_WAIT_S = 2.0
UNKNOWN_EXIT_CODE = -1  # that word did not come (the warm worker is gone)


def supported() -> bool:
    """Forking once torch and MLflow are loaded is safe on Linux. macOS's system libraries
    are not fork-safe once loaded (why Python spawns workers there); Windows cannot fork.
    Elsewhere every launch starts a worker of its own."""
    return sys.platform.startswith("linux")


def enabled() -> bool:
    return supported() and os.environ.get(ENABLED_ENV, "1") != "0"


def _import_env() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in _IMPORT_ENV}


class ForkedWorker:
    """A run's worker forked by the warm worker, seen as a `subprocess.Popen` is seen. It is
    the warm worker's child, not ours: its exit code is what the warm worker reports."""

    returncode: int | None = None

    def __init__(self, pid: int, exit_codes: ExitCodes) -> None:
        self.pid = pid
        self._exit_codes = exit_codes
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:  # it ended before we looked
            self._process = None

    def poll(self) -> int | None:
        """None while it runs, then its exit code."""
        if self.returncode is None:
            code = self._exit_codes.reported(self.pid)
            if code is None:
                if self._process is not None and self._process.is_running():
                    return None  # (a pid reused since fails is_running: its start time differs)
                code = self._exit_codes.get(self.pid, EXIT_CODE_WAIT_S)  # the report is on its way
            self.returncode = code
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except psutil.TimeoutExpired as exc:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0) from exc
            except psutil.NoSuchProcess:
                pass
        self.returncode = self._exit_codes.get(self.pid, EXIT_CODE_WAIT_S)
        return self.returncode


class ExitCodes:
    """Exit codes of forked workers as the warm worker reports them, by pid."""

    def __init__(self) -> None:
        self._codes: dict[int, int] = {}
        self._changed = threading.Condition()

    def put(self, pid: int, code: int) -> None:
        with self._changed:
            self._codes[pid] = code
            self._changed.notify_all()

    def forget(self, pid: int) -> None:
        with self._changed:
            self._codes.pop(pid, None)

    def reported(self, pid: int) -> int | None:
        """`pid`'s code if the warm worker has reported it, else None."""
        with self._changed:
            return self._codes.get(pid)

    def get(self, pid: int, wait_s: float) -> int:
        """`pid`'s code, waiting up to `wait_s` for it (-1 if it does not come then)."""
        with self._changed:
            if self._changed.wait_for(lambda: pid in self._codes, timeout=wait_s):
                return self._codes[pid]
        return UNKNOWN_EXIT_CODE


class WarmWorker:
    """The warm worker's process and the answers it gives."""

    def __init__(self, home: Path) -> None:
        folder = Path(home) / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "warm-worker.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "activelab.worker", "--standby"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # READY and pid lines only: runs log to their folders
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self.import_env = _import_env()
        self.ready = threading.Event()
        self._answers: queue.Queue[int] = queue.Queue()
        self._exit_codes = ExitCodes()
        threading.Thread(target=self._listen, name="activelab-warm-worker", daemon=True).start()

    def _listen(self) -> None:
        assert self.process.stdout is not None  # a pipe: Popen(stdout=PIPE)
        for line in self.process.stdout:
            line = line.strip()
            if line == READY:
                self.ready.set()
                log.info("Warm worker ready (pid %d)", self.process.pid)
            elif line.startswith(PID_PREFIX):
                pid = int(line[len(PID_PREFIX) :])
                self._exit_codes.forget(pid)  # a code for that pid was an earlier worker's
                self._answers.put(pid)
            elif line.startswith(EXIT_PREFIX):
                ended, code = line[len(EXIT_PREFIX) :].split()
                self._exit_codes.put(int(ended), int(code))

    @property
    def usable(self) -> bool:
        return (
            self.ready.is_set() and self.process.poll() is None and self.import_env == _import_env()
        )

    def fork(self, spec_path: Path, env: dict[str, str]) -> ForkedWorker | None:
        """Have it fork a worker for `spec_path` under `env`; None if it cannot."""
        if not self.usable:
            return None
        request = {"spec": str(spec_path), "env": env, "cwd": os.getcwd()}
        assert self.process.stdin is not None  # a pipe: Popen(stdin=PIPE)
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            return ForkedWorker(self._answers.get(timeout=ANSWER_TIMEOUT_S), self._exit_codes)
        except (OSError, queue.Empty):
            self.close()  # it did not answer: no later launch waits on it again
            return None

    def close(self) -> None:
        """Closing its stdin ends it; the runs it forked go on."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


_lock = threading.Lock()
_warm: WarmWorker | None = None


def start(home: Path) -> WarmWorker | None:
    """Start the warm worker unless a usable or starting one exists; return it (None where
    it is not `supported`)."""
    global _warm
    if not supported():
        return None
    with _lock:
        if _warm is not None and _warm.process.poll() is None:
            if _warm.usable or not _warm.ready.is_set():
                return _warm
            _warm.close()  # started under other import settings
        _warm = WarmWorker(home)
        return _warm


def ensure(home: Path) -> None:
    """Start the warm worker unless one exists or warm workers are off."""
    if enabled():
        start(home)


def take(spec_path: Path, env: dict[str, str]) -> ForkedWorker | None:
    """A worker forked for `spec_path` by the warm worker; None if none is ready."""
    with _lock:  # one launch at a time reads the answers
        if _warm is not None:
            return _warm.fork(spec_path, env)
    return None


def ensure_after(process: subprocess.Popen, home: Path) -> None:
    """Once `process` (a worker of its own) exits, make sure the warm worker exists."""
    if not enabled():
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
    """Import what a training run needs, in the warm worker, before any launch arrives.
    Libraries and activelab's own plugin modules: a model's settings and the plugins are
    loaded (registered) by each forked worker."""
    import mlflow
    import mlflow.pytorch
    import mlflow.store.tracking.sqlalchemy_store  # a database store's first open (~2.4 s)
    import pandas
    import torch
    from sklearn.neighbors import NearestNeighbors

    import activelab.models
    import activelab.tasks.neighbors
    import activelab.tasks.ssvae
    import activelab.tasks.ssvae_network
    from activelab.plugins import BUILTIN_PLUGINS

    for module_name in BUILTIN_PLUGINS:  # the modules only: each worker registers its plugins
        with contextlib.suppress(Exception):  # a broken one is reported by the worker
            importlib.import_module(module_name)
    del mlflow, pandas, NearestNeighbors, activelab  # imported for their start-up cost
    # the first optimizer imports torch's compiler stack (~1.5 s): do it now
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
