"""Reading a model's runs: summaries, checkpoints, stop requests and dead-run detection."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelab import keys
from activelab.errors import RunNotFoundError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import pandas as pd
    from mlflow.entities import Run

    from activelab.tracking import Tracking

STALE_ENV = "ACTIVELAB_STALE_AFTER"
# A run on another machine whose heartbeat is older than this is presumed dead.
DEFAULT_STALE_AFTER_S = 120.0
NOTE_TAG = keys.NOTE_TAG
ACTIVE = ("RUNNING", "SCHEDULED")


def _ms(value: str | int | None) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)


@dataclass(frozen=True)
class RunSummary:
    """One run as the job history, the CLI and the compare page show it."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    kind: str
    started: datetime | None
    ended: datetime | None
    epochs: int  # trained in this run
    lineage_epochs: int  # along the whole lineage, up to the end of this run
    target_epochs: int
    parent_run: str | None
    labeled_count: int | None
    labels_digest: str | None
    error: str | None
    last_checkpoint: str | None
    progress: dict[str, Any] | None
    final_losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        end = self.ended or datetime.now(timezone.utc)
        return (end - self.started).total_seconds()

    @classmethod
    def from_run(cls, run: Run) -> RunSummary:
        tags, metrics = run.data.tags, run.data.metrics
        start_epoch = int(tags.get(keys.START_EPOCH, 0) or 0)
        lineage = int(tags.get(keys.EPOCHS_TOTAL, start_epoch) or start_epoch)
        progress = None
        if tags.get(keys.PROGRESS):
            try:
                progress = json.loads(tags[keys.PROGRESS])
            except ValueError:
                progress = None
        count = tags.get(keys.RUN_LABELED_COUNT)
        losses = {
            k[len("epoch/loss/") :]: v for k, v in metrics.items() if k.startswith("epoch/loss/")
        }
        return cls(
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id[:8],
            experiment_id=run.info.experiment_id,
            status=run.info.status,
            kind=tags.get(keys.RUN_KIND, "train"),
            started=_ms(run.info.start_time),
            ended=_ms(run.info.end_time),
            epochs=max(0, lineage - start_epoch),
            lineage_epochs=lineage,
            target_epochs=target_epochs(run),
            parent_run=tags.get(keys.PARENT_RUN) or None,
            labeled_count=int(count) if count not in (None, "") else None,
            labels_digest=tags.get(keys.LABELS_DIGEST) or None,
            error=tags.get(keys.ERROR) or None,
            last_checkpoint=tags.get(keys.LAST_CHECKPOINT) or None,
            progress=progress,
            final_losses=losses,
            metrics=dict(metrics),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "experiment_id": self.experiment_id,
            "status": self.status,
            "kind": self.kind,
            "started": self.started.isoformat(timespec="seconds") if self.started else None,
            "ended": self.ended.isoformat(timespec="seconds") if self.ended else None,
            "duration_s": self.duration_s,
            "epochs": self.epochs,
            "lineage_epochs": self.lineage_epochs,
            "target_epochs": self.target_epochs,
            "parent_run": self.parent_run,
            "labeled_count": self.labeled_count,
            "labels_digest": self.labels_digest,
            "error": self.error,
            "last_checkpoint": self.last_checkpoint,
            "progress": self.progress,
            "final_losses": self.final_losses,
        }


def search_runs(
    tracking: Tracking,
    experiment_ids: list[str],
    kind: str | None = "train",
    statuses: tuple[str, ...] | None = None,
    max_results: int = 100,
) -> list[Run]:
    """Runs of the given models, newest first (MLflow filters a status one value at a time,
    so several statuses are filtered here)."""
    clauses = [f"tags.`{keys.RUN_KIND}` = '{kind}'"] if kind else []
    if statuses and len(statuses) == 1:
        clauses.append(f"attributes.status = '{statuses[0]}'")
    runs = tracking.search_runs(
        experiment_ids, " AND ".join(clauses), ["attributes.start_time DESC"], max_results
    )
    if statuses and len(statuses) > 1:
        runs = [r for r in runs if r.info.status in statuses]
    return list(runs)


def target_epochs(run: Run) -> int:
    """The epochs a run was asked to train: its `epochs` param (a tag on runs before 0.2)."""
    asked = run.data.params.get("epochs") or run.data.tags.get(keys.TARGET_EPOCHS)
    return int(asked or 0)


def get_run(tracking: Tracking, run_id: str) -> Run:
    from mlflow.exceptions import MlflowException

    from activelab.connectivity import is_transient

    try:
        return tracking.get_run(run_id)
    except MlflowException as exc:
        if is_transient(exc):
            raise  # an unreachable server is no missing run
        raise RunNotFoundError(
            f"No run {run_id!r} in {tracking.uri}; `activelab runs list MODEL` shows the runs."
        ) from None


# --- liveness -------------------------------------------------------------------------------


def _local_trainer_alive(run: Run) -> bool | None:
    """Whether the process that ran `run` lives, where that can be told (a process recorded
    on this machine); None elsewhere. Whatever the run's status."""
    tags = run.data.tags
    pid, host = tags.get(keys.PID), tags.get(keys.HOST)
    if not pid or host != socket.gethostname():
        return None
    started = float(tags[keys.PROCESS_STARTED]) if tags.get(keys.PROCESS_STARTED) else None
    return _process_alive(int(pid), started)


def trainer_process_ended(run: Run) -> bool:
    """Whether the process that ran `run` is known to be gone (False where it cannot be told:
    elsewhere, or no process recorded), whatever the run's status."""
    return _local_trainer_alive(run) is False


def _process_alive(pid: int, started: float | None) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # A reused PID belongs to a process that started later than ours.
        return started is None or abs(process.create_time() - started) < 2.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def dead_reason(run: Run, now_ms: int | None = None) -> str | None:
    """Why a RUNNING run is presumably dead, or None if it may be alive."""
    if run.info.status not in ACTIVE:
        return None
    tags = run.data.tags
    now_ms = now_ms or int(time.time() * 1000)
    host = tags.get(keys.HOST)
    alive = _local_trainer_alive(run)
    if alive is not None:
        if not alive:
            return (
                f"The trainer process (pid {tags[keys.PID]}) ended without finishing its run "
                "(killed, or out of memory?); continue from its last checkpoint."
            )
        return None
    beat = tags.get(keys.HEARTBEAT) or run.info.start_time
    stale_after = float(os.environ.get(STALE_ENV, DEFAULT_STALE_AFTER_S))
    if beat and now_ms - int(beat) > stale_after * 1000:
        where = f" on {host}" if host else ""
        return (
            f"The trainer{where} has sent no heartbeat for {stale_after:.0f} s; "
            "it is presumed dead."
        )
    return None


def mark_failed(tracking: Tracking, run: Run, reason: str) -> None:
    """End a run that can no longer end itself (DESIGN: a hard-killed trainer stays RUNNING);
    the reason names its last checkpoint, the place to continue from."""
    run_id = run.info.run_id
    last = run.data.tags.get(keys.LAST_CHECKPOINT)
    if last and last not in reason:
        reason = f"{reason} Its last checkpoint: {run_id}:{Path(last).name}."
    tracking.set_run_tags(run_id, {keys.ERROR: reason, NOTE_TAG: f"Failed: {reason}"})
    tracking.end_run(run_id, "FAILED")
    tracking.delete_run_tags(run_id, keys.PROCESS_TAGS, run.data.tags)
    exp = tracking.get_experiment(run.info.experiment_id)
    if exp is not None and exp.tags.get(keys.LATEST_RUN) == run_id:
        tracking.set_experiment_tags(run.info.experiment_id, {keys.LATEST_RUN_STATUS: "FAILED"})


def wait_for_end(
    tracking: Tracking,
    run_id: str,
    timeout_s: float,
    poll_s: float = 0.5,
    say: Callable[[str], None] | None = None,
) -> str:
    """Wait until a run is no longer active and return its status. A trainer found dead on
    the way ends its run as FAILED at once; past `timeout_s`, TrainingError says what to do.
    An unreachable server is said (`say`) and retried within the same bound."""
    from activelab.connectivity import Outage
    from activelab.errors import TrainingError

    deadline = time.monotonic() + timeout_s
    outage = Outage(tracking.uri, say or log.warning, timeout_s)
    while True:
        try:
            run = get_run(tracking, run_id)
            outage.ok()
        except Exception as exc:
            outage.failed(exc)
            time.sleep(poll_s)
            continue
        if run.info.status not in ACTIVE:
            return run.info.status
        if reap_dead_runs(tracking, [run]):  # its trainer is gone: FAILED, or ended meanwhile
            return get_run(tracking, run_id).info.status
        if time.monotonic() >= deadline:
            raise TrainingError(
                f"Run {run_id} is still {run.info.status} after {timeout_s:.0f} s: its trainer "
                "has not reached a step boundary. Wait longer (--timeout) or check "
                f"`activelab runs show {run_id}`."
            )
        time.sleep(poll_s)


def reap_dead_runs(tracking: Tracking, runs: list[Run]) -> list[str]:
    """Mark the presumed-dead RUNNING runs among `runs` FAILED. Returns the ids of the runs
    whose trainer is gone, so changed since `runs` was read (now FAILED, or ended by what
    their trainer left unsent): read those again."""
    gone = []
    for run in runs:
        reason = dead_reason(run)
        if reason is None:
            continue
        gone.append(run.info.run_id)
        settle_dead_run(tracking, run.info.run_id, reason)
    return gone


def settle_dead_run(tracking: Tracking, run_id: str, reason: str) -> None:
    """The trainer of `run_id` is gone: end the run as it really ended, else FAILED.

    The run was read before its trainer was seen gone: a trainer that ended its run (a stop,
    the last epoch) and then exited in between is not dead; nor is one that ended it during
    an outage and left its end in this machine's spool. Send that spool, read the run again,
    and mark it FAILED only if it is still active."""
    from activelab.outbox import deliver_run

    settings = tracking.settings
    if deliver_run(settings.home, tracking, run_id):
        log.info("Sent what the ended trainer of run %s had left unsent", run_id)
    run = get_run(tracking, run_id)
    if run.info.status in ACTIVE:
        mark_failed(tracking, run, reason)


def checked_run(tracking: Tracking, run_id: str) -> Run:
    """The run as every view should show it: read now, and FAILED if its trainer is dead
    (the one status source for the app, the CLI and the API)."""
    run = get_run(tracking, run_id)
    if reap_dead_runs(tracking, [run]):
        run = get_run(tracking, run_id)
    return run


def checked_runs(tracking: Tracking, runs: list[Run]) -> list[Run]:
    """`runs` with dead trainers' runs marked FAILED and re-read."""
    reaped = set(reap_dead_runs(tracking, runs))
    return [get_run(tracking, r.info.run_id) if r.info.run_id in reaped else r for r in runs]


def request_stop(tracking: Tracking, run_id: str) -> None:
    """Ask a run to stop at its next step boundary, wherever it runs (a tag it polls).

    A trainer on this machine also gets SIGTERM, which it treats the same way, sooner.
    """
    import signal

    run = get_run(tracking, run_id)
    if run.info.status not in ACTIVE:
        return
    tracking.set_run_tags(run_id, {keys.STOP_REQUESTED: str(int(time.time() * 1000))})
    tags = run.data.tags
    if tags.get(keys.PID) and tags.get(keys.HOST) == socket.gethostname():
        started = float(tags[keys.PROCESS_STARTED]) if tags.get(keys.PROCESS_STARTED) else None
        pid = int(tags[keys.PID])
        if pid != os.getpid() and _process_alive(pid, started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)


# --- checkpoints ------------------------------------------------------------------------------


def list_checkpoints(tracking: Tracking, run_id: str) -> list[str]:
    """Artifact paths of a run's checkpoints, oldest first."""
    paths = tracking.list_run_artifacts(run_id, "checkpoints")
    return sorted((p for p in paths if p.endswith(".pt")), key=_checkpoint_order)


def _checkpoint_order(path: str) -> tuple[int, int]:
    name = Path(path).stem
    kind, _, number = name.partition("-")
    return (int(number) if number.isdigit() else 0, 0 if kind == "epoch" else 1)


def resolve_checkpoint(
    tracking: Tracking, ref: str, experiment_id: str | None = None
) -> tuple[str, str]:
    """(run id, checkpoint path) from "RUN", "RUN:epoch-0005.pt", "RUN:checkpoints/x.pt"
    or "runs:/RUN/checkpoints/x.pt". A bare run means its latest checkpoint."""
    text = ref.strip()
    if text.startswith("runs:/"):
        run_id, _, path = text[len("runs:/") :].partition("/")
    else:
        run_id, _, path = text.partition(":")
    run = get_run(tracking, run_id)
    if experiment_id is not None and run.info.experiment_id != experiment_id:
        raise RunNotFoundError(f"Run {run_id} belongs to another model; continue it from there.")
    available = list_checkpoints(tracking, run_id)
    if not available:
        raise RunNotFoundError(f"Run {run_id} ({run.info.run_name}) saved no checkpoint.")
    if not path:
        return run_id, run.data.tags.get(keys.LAST_CHECKPOINT) or available[-1]
    if "/" not in path:
        path = f"checkpoints/{path}"
    if path not in available:
        raise RunNotFoundError(
            f"Run {run_id} has no checkpoint {path!r}; it has: "
            f"{', '.join(Path(p).name for p in available)}."
        )
    return run_id, path


def download_checkpoint(tracking: Tracking, run_id: str, path: str, target: Path) -> Path:
    """Copy one checkpoint to `target` (a file path, or a folder to put it in)."""
    target = Path(target).expanduser()
    destination = target / Path(path).name if target.is_dir() else target
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="activelab-ckpt-") as tmp:
        local = tracking.download_run_artifact(run_id, path, tmp)
        shutil.copyfile(local, destination)
    return destination


def read_checkpoint(tracking: Tracking, run_id: str, path: str) -> dict[str, Any]:
    from activelab.runtime import load_checkpoint_bytes

    with tempfile.TemporaryDirectory(prefix="activelab-ckpt-") as tmp:
        local = tracking.download_run_artifact(run_id, path, tmp)
        return load_checkpoint_bytes(Path(local).read_bytes())


def latest_predictions_run(tracking: Tracking, experiment_id: str) -> str | None:
    """The newest finished or stopped training run of a model that logged predictions."""
    runs = search_runs(
        tracking, [experiment_id], kind="train", statuses=("FINISHED", "KILLED"), max_results=20
    )
    return next((r.info.run_id for r in runs if r.data.tags.get(keys.PREDICTIONS)), None)


def read_predictions(tracking: Tracking, run_id: str) -> pd.DataFrame | None:
    """A run's per-sample predictions (`z0..`, `predicted`, `certainty`, `p0..`), or None."""
    import pandas as pd

    path = get_run(tracking, run_id).data.tags.get(keys.PREDICTIONS)
    if not path:
        return None
    with tempfile.TemporaryDirectory(prefix="activelab-pred-") as tmp:
        local = tracking.download_run_artifact(run_id, path, tmp)
        return pd.read_parquet(Path(local))


def latent_of(frame: pd.DataFrame) -> np.ndarray:
    """(N, 2) labeling-map coordinates (`z0..`) from a predictions frame."""
    import numpy as np

    cols = sorted((c for c in frame.columns if c[:1] == "z" and c[1:].isdigit()),
                  key=lambda c: int(c[1:]))  # fmt: skip
    return frame[cols].to_numpy(np.float64)


def features_of(frame: pd.DataFrame) -> np.ndarray:
    """(N, D) latent the model classifies from (`h0..`), or the map (`z0..`) when the latent
    is the map itself; what query strategies measure distances in."""
    import numpy as np

    cols = sorted((c for c in frame.columns if c[:1] == "h" and c[1:].isdigit()),
                  key=lambda c: int(c[1:]))  # fmt: skip
    return frame[cols].to_numpy(np.float64) if cols else latent_of(frame)


def probabilities_of(frame: pd.DataFrame, classes: int) -> np.ndarray:
    """(N, K) class probabilities from a predictions frame (NaN without a classifier)."""
    import numpy as np

    cols = sorted((c for c in frame.columns if c[:1] == "p" and c[1:].isdigit()),
                  key=lambda c: int(c[1:]))  # fmt: skip
    if not cols:
        return np.full((len(frame), max(1, classes)), np.nan)
    return frame[cols].to_numpy(np.float64)
