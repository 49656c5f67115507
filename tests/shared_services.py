"""Servers the pytest-xdist workers of one run share: the first worker that needs one starts it,
the others use it, and the controller stops it when the run ends.

Each worker used to start its own PostgreSQL-backed `mlflow server` and basic-auth server: the
same ~20 CPU-seconds twice on a 2-core machine where the suite is CPU-bound. A service started
here outlives the worker that started it (no parent-death signal); the record it leaves in the
run's temp folder says which process groups and clusters to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

FOLDER = "shared-services"
START_TIMEOUT_S = 300  # a worker waits this long for another one starting the same service


def distributed() -> bool:
    """True in a pytest-xdist worker (the run has a controller that outlives the workers)."""
    return "PYTEST_XDIST_WORKER" in os.environ


def shared_service(run_folder: Path, name: str, start: Callable[[Path], dict[str, Any]]) -> dict:
    """The record of service `name` of this run, started by `start(folder)` if nobody has yet.

    `start` returns a JSON-able record: what the tests need (e.g. "url") plus "process_groups"
    (ids to signal) and "postgres" (a cluster to stop), read by `stop_shared_services`."""
    root = run_folder / FOLDER
    root.mkdir(exist_ok=True)
    record = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock"), timeout=START_TIMEOUT_S):
        if not record.exists():
            record.write_text(json.dumps(start(root / name)))
    return json.loads(record.read_text())


def stop_shared_services(run_folder: Path, timeout: float = 30.0) -> None:
    """Stop every service a worker of this run started (called by the controller at the end)."""
    from postgres import Postgres

    for record in sorted((run_folder / FOLDER).glob("*.json")):
        info = json.loads(record.read_text())
        members = []
        for group in info.get("process_groups", []):
            members += [p for p in psutil.process_iter() if _group_of(p) == group]
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(group, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=timeout)
        for process in alive:  # did not stop within the bound: no server outlives the run
            process.kill()
        if info.get("postgres"):
            cluster = info["postgres"]
            Postgres(Path(cluster["folder"]), cluster["port"], cluster["run_as"]).stop()


def _group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, psutil.Error):
        return None
