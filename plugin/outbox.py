"""Everything a training run sends to MLflow, delivered by one thread the loop never waits on.

The loop appends metrics and tags (memory) and hands over files (checkpoints, images,
predictions, texts), which are first written to the run's spool folder on local disk. One
thread sends metrics and tags about once a second, with the heartbeat and the stop poll in the
same round trip (DESIGN.md: per-step synchronous logging roughly doubles the step time);
another uploads the files in order, so a large checkpoint never holds back the heartbeat. While
the server answers, at most MAX_QUEUED_FILES files wait (the loop waits for room beyond that).

When the tracking server does not answer, training goes on: what is in memory moves to the
spool (memory stays bounded; a crash loses nothing), the sender retries with backoff, says so
once, and delivers the backlog when the server is back. Whatever is still unsent when the run
ends stays in the spool; `deliver_pending` sends it on the next start (the worker, the app and
`activelab runs sync` call it).

Spool layout, one folder per run (`<home>/outbox/<run_id>/`): `manifest.json` (where to
send), `journal.jsonl` (one entry per item, numbered), `delivered` (the last delivered number),
`files/<token>/<name>` (an item's file), `lock` (held by the process that owns the folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelab import keys
from activelab.connectivity import is_transient

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from activelab.tracking import Tracking

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
MAX_TAGS_PER_BATCH = 100
MAX_BACKOFF_S = 10.0
# Files queued while the server answers: past this the loop waits for uploads (a checkpoint
# every fast epoch would otherwise grow the spool without end). An outage lifts the bound.
MAX_QUEUED_FILES = 8
MAX_ROOM_WAIT_S = 60.0
# Tags only meaningful while the run is live: never written to the spool.
LIVE_ONLY_TAGS = (keys.HEARTBEAT,)


def _now_ms() -> str:
    return str(int(time.time() * 1000))


def outbox_root(home: str | Path) -> Path:
    return Path(home) / "outbox"


def _plain_name(name: str) -> str:
    """A spool entry names a file inside the spool, never a path (the journal is data)."""
    if not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"not a plain file name: {name!r}")
    return name


def _token(value: str) -> str:
    if not value or not all(c in "0123456789abcdef" for c in value):
        raise ValueError(f"not a spool token: {value!r}")
    return value


def _relative_artifact_dir(path: str) -> str:
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts:
        raise ValueError(f"not a relative artifact folder: {path!r}")
    return path


class Spool:
    """One run's folder of unsent items (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock_handle: Any = None
        self._next = 1
        self._pending: list[dict[str, Any]] | None = None  # the owner's view (see acquire)
        self._append_lock = threading.Lock()  # the loop and the sender both append

    # --- ownership ----------------------------------------------------------------------------

    def acquire(self, blocking: bool = False) -> bool:
        """Hold the folder (released on close or when the process dies)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = (self.folder / "lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return False
        self._lock_handle = handle
        done = self.delivered()
        entries = self.entries()
        self._next = max(entries[-1]["seq"] if entries else 0, done) + 1
        self._pending = [e for e in entries if e["seq"] > done]  # kept in memory by the owner
        return True

    def release(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    # --- writing ------------------------------------------------------------------------------

    def write_manifest(self, tracking_uri: str, run_id: str, experiment_id: str) -> None:
        manifest = {"tracking_uri": tracking_uri, "run_id": run_id, "experiment_id": experiment_id}
        (self.folder / "manifest.json").write_text(json.dumps(manifest))

    def manifest(self) -> dict[str, str]:
        return json.loads((self.folder / "manifest.json").read_text())

    def file_slot(self, name: str) -> tuple[str, Path]:
        """A token and a path for an item's file; `append` journals it once written."""
        token = uuid.uuid4().hex
        folder = self.folder / "files" / token
        folder.mkdir(parents=True, exist_ok=True)
        return token, folder / _plain_name(name)

    def append(self, entry: dict[str, Any]) -> None:
        """Journal an item; numbers follow the order of appends, which is delivery order."""
        with self._append_lock:
            entry = {**entry, "seq": self._next}
            self._next += 1
            with (self.folder / "journal.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
            if self._pending is not None:
                self._pending.append(entry)

    # --- reading ------------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        path = self.folder / "journal.jsonl"
        if not path.exists():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: nothing after it counts
                break
        return sorted(entries, key=lambda e: e["seq"])

    def delivered(self) -> int:
        try:
            return int((self.folder / "delivered").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def pending(self) -> list[dict[str, Any]]:
        if self._pending is not None:
            with self._append_lock:
                return list(self._pending)
        done = self.delivered()
        return [e for e in self.entries() if e["seq"] > done]

    def pending_count(self) -> int:
        return len(self._pending) if self._pending is not None else len(self.pending())

    def file_of(self, entry: dict[str, Any]) -> Path:
        return self.folder / "files" / _token(entry["token"]) / _plain_name(entry["file"])

    def mark_delivered(self, entry: dict[str, Any]) -> None:
        marker = self.folder / "delivered"
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(str(entry["seq"]))
        tmp.replace(marker)
        # no file, or a damaged entry (never followed)
        with contextlib.suppress(KeyError, ValueError):
            shutil.rmtree(self.file_of(entry).parent, ignore_errors=True)
        if self._pending is not None:
            with self._append_lock:
                self._pending = [e for e in self._pending if e["seq"] != entry["seq"]]
                if not self._pending:  # all delivered: start the journal afresh
                    (self.folder / "journal.jsonl").write_text("")

    def remove(self) -> None:
        """Delete the delivered spool, unless it keeps files the store refused."""
        if (self.folder / "refused").exists():
            for name in ("journal.jsonl", "delivered", "manifest.json", "lock"):
                (self.folder / name).unlink(missing_ok=True)
            shutil.rmtree(self.folder / "files", ignore_errors=True)
            return
        shutil.rmtree(self.folder, ignore_errors=True)


class Deliverer:
    """Sends spool entries to one run (used live by the Outbox and later by `deliver_pending`)."""

    def __init__(self, tracking: Tracking, run_id: str, experiment_id: str, spool: Spool):
        self.tracking = tracking
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.spool = spool
        self.refused: list[str] = []  # what could not be stored, and where its file is kept

    def deliver_backlog(self, on_delivered: Callable[[], None] | None = None) -> int:
        """Deliver every pending entry in order; raises at the first transient failure. An
        item the store refuses (a read-only artifact folder, a full disk) is set aside with
        its file kept in the spool's `refused/` folder, and named in `refused`."""
        count = 0
        for entry in self.spool.pending():
            try:
                self._deliver(entry)
            except Exception as exc:
                if is_transient(exc):
                    raise
                self.refused.append(self._set_aside(entry, exc))
                log.error("%s", self.refused[-1])
            self.spool.mark_delivered(entry)
            count += 1
            if on_delivered is not None:
                on_delivered()
        return count

    def _set_aside(self, entry: dict[str, Any], exc: BaseException) -> str:
        what = entry["kind"]
        try:
            source = self.spool.file_of(entry)
        except (KeyError, ValueError):
            return f"A damaged {what} entry in {self.spool.folder} was skipped ({exc})."
        kept = self.spool.folder / "refused" / f"{entry['seq']}-{source.name}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        if source.exists():
            source.replace(kept)
        where = entry.get("artifact_dir") or entry.get("key") or ""
        return (
            f"Could not store {where}/{source.name} in the run's artifacts ({exc}); the file "
            f"is kept at {kept}. Make the artifact folder writable (or free disk space)."
        )

    def _deliver(self, entry: dict[str, Any]) -> None:
        kind = entry["kind"]
        if kind == "batch":
            batch = json.loads(self.spool.file_of(entry).read_text(encoding="utf-8"))
            self.send_batch(batch["metrics"], batch["tags"], batch["experiment_tags"])
        elif kind == "artifact":
            folder = _relative_artifact_dir(entry["artifact_dir"]) or None
            self.tracking.log_artifact(self.run_id, self.spool.file_of(entry), folder)
            self.send_batch([], entry.get("tags", {}), {})
        elif kind == "image":
            import numpy as np

            image = np.load(self.spool.file_of(entry), allow_pickle=False)
            self.tracking.log_image_step(
                self.run_id, image, entry["key"], int(entry["step"]), int(entry["timestamp"])
            )
        elif kind == "end":
            self._end(entry["status"], int(entry["end_time"]))
        else:
            raise ValueError(f"unknown spool entry {kind!r}")

    def _end(self, status: str, end_time: int) -> None:
        run = self.tracking.get_run(self.run_id)
        if run.info.status == "FAILED" and status != "FAILED" and run.data.tags.get(keys.ERROR):
            # a watcher presumed the run dead while its trainer could not reach the server
            self.tracking.delete_run_tag(self.run_id, keys.ERROR)
        self.tracking.end_run(self.run_id, status, end_time)
        self.tracking.delete_run_tags(self.run_id, keys.PROCESS_TAGS, run.data.tags)

    def send_batch(
        self, metrics: list[Any], tags: dict[str, str], experiment_tags: dict[str, str]
    ) -> None:
        """Metrics (key, value, timestamp, step) and tags; partial progress is not repeated
        because MLflow ignores an identical metric sent twice."""
        from mlflow.entities import Metric, RunTag

        run_tags = [RunTag(k, v) for k, v in tags.items()]
        sent = 0
        while run_tags or sent < len(metrics):
            chunk = metrics[sent : sent + MAX_METRICS_PER_BATCH]
            entities = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in chunk]
            self.tracking.log_batch(self.run_id, entities, run_tags[:MAX_TAGS_PER_BATCH])
            run_tags = run_tags[MAX_TAGS_PER_BATCH:]
            sent += len(chunk)
        if experiment_tags:
            self.tracking.set_experiment_tags(self.experiment_id, experiment_tags)


class Outbox:
    """A live run's channel to MLflow: cheap calls for the loop, two sender threads."""

    def __init__(
        self,
        tracking: Tracking,
        run_id: str,
        experiment_id: str,
        home: str | Path,
        interval: float = 1.0,
        stop_poll_interval: float = 3.0,
    ) -> None:
        self.tracking = tracking
        self.run_id = run_id
        self.interval = interval
        self.stop_poll_interval = stop_poll_interval
        self.spool = Spool(outbox_root(home) / run_id)
        if not self.spool.acquire(blocking=True):  # pragma: no cover - blocking never refuses
            raise RuntimeError("could not hold the run's spool folder")
        self.spool.write_manifest(tracking.uri, run_id, experiment_id)
        self.deliverer = Deliverer(tracking, run_id, experiment_id, self.spool)
        self.stop_requested = threading.Event()
        self.unreachable_since: float | None = None
        self.sent = 0
        self._metrics: list[tuple[str, float, int, int]] = []
        self._run_tags: dict[str, str] = {}
        self._experiment_tags: dict[str, str] = {}
        self._lock = threading.Lock()  # memory buffers
        self._send_lock = threading.Lock()  # one delivery at a time, in order
        self._wake = threading.Event()  # the live sender
        self._files_wake = threading.Event()  # the file sender
        self._room = threading.Condition()  # notified after each delivered item
        self._closing = threading.Event()
        self._last_stop_poll = 0.0
        self._threads: list[threading.Thread] = []

    # --- called from the training loop (cheap, never touches the network) --------------------

    def add(self, figures: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """Queue one value per key at `step` (plain tuples: this runs on every training step)."""
        stamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        with self._lock:
            self._metrics.extend((k, v, stamp, step) for k, v in figures.items())
            if len(self._metrics) >= MAX_METRICS_PER_BATCH:
                self._wake.set()

    def set_run_tags(self, tags: dict[str, str]) -> None:
        """Run tags sent with the next batch (the newest value per key wins)."""
        with self._lock:
            self._run_tags.update(tags)

    def set_experiment_tags(self, tags: dict[str, str]) -> None:
        """Model-card tags sent with the next batch (the newest value per key wins)."""
        with self._lock:
            self._experiment_tags.update(tags)

    def artifact(
        self,
        name: str,
        artifact_dir: str,
        write: Callable[[Path], object],
        tags: dict[str, str] | None = None,
    ) -> None:
        """A file for `<artifact_dir>/<name>`, written by `write(path)` into the spool; `tags`
        are set once it is delivered (so a tag never names a file the store lacks)."""
        self._wait_for_room()
        token, path = self.spool.file_slot(name)
        write(path)
        entry = {"kind": "artifact", "token": token, "file": name, "artifact_dir": artifact_dir}
        self.spool.append({**entry, "tags": tags or {}})
        self._files_wake.set()

    def image(self, key: str, image: np.ndarray, step: int) -> None:
        """One image of the series `key` (MLflow's image grid)."""
        import numpy as np

        self._wait_for_room()
        token, path = self.spool.file_slot("image.npy")
        np.save(path, np.ascontiguousarray(image), allow_pickle=False)
        entry = {"kind": "image", "token": token, "file": "image.npy", "key": key, "step": step}
        self.spool.append({**entry, "timestamp": int(time.time() * 1000)})
        self._files_wake.set()

    def _wait_for_room(self) -> None:
        """The bounded queue: while the server answers, hold the loop until uploads catch up."""
        deadline = time.monotonic() + MAX_ROOM_WAIT_S
        with self._room:
            while (
                self.spool.pending_count() >= MAX_QUEUED_FILES
                and self.unreachable_since is None
                and self._threads
                and not self._closing.is_set()
                and time.monotonic() < deadline
            ):
                self._files_wake.set()
                self._room.wait(0.5)

    def _delivered_one(self) -> None:
        with self._room:
            self._room.notify_all()

    # --- the sender ---------------------------------------------------------------------------

    def start(self) -> Outbox:
        self._threads = [
            threading.Thread(target=self._run_live, name="activelab-outbox-live", daemon=True),
            threading.Thread(target=self._run_files, name="activelab-outbox-files", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _run_live(self) -> None:
        """Metrics, tags, the heartbeat and the stop poll about once a second; a separate
        thread from uploads, so a large checkpoint never holds back the heartbeat."""
        self._send_loop(self._wake, self._send_live)

    def _run_files(self) -> None:
        self._send_loop(self._files_wake, self._send_files)

    def _send_loop(self, wake: threading.Event, send: Callable[[], bool]) -> None:
        """Call `send` when woken or every interval; back off to MAX_BACKOFF_S while it fails."""
        backoff = self.interval
        while not self._closing.is_set():
            wake.wait(backoff)
            wake.clear()
            if self._closing.is_set():
                return
            ok = send()
            backoff = self.interval if ok else min(max(backoff * 2, 1.0), MAX_BACKOFF_S)

    def _send_live(self) -> bool:
        try:
            if self._spilled_pending():
                # older metrics and tags wait in the spool: keep their order, beat only
                self._spill_memory()
                self.deliverer.send_batch([], {keys.HEARTBEAT: _now_ms()}, {})
                self._files_wake.set()
            else:
                self._flush_memory()
            self._poll_stop()
        except Exception as exc:
            if not is_transient(exc):  # the server refused this batch: say so, go on
                log.error("The tracking server refused a batch of metrics/tags: %s", exc)
                return True
            self._went_unreachable(exc)
            self._spill_memory()
            return False
        self._back_online()
        return True

    def _send_files(self) -> bool:
        """Deliver the spool's backlog in order (one caller at a time)."""
        with self._send_lock:
            try:
                self.sent += self.deliverer.deliver_backlog(self._delivered_one)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._went_unreachable(exc)
                return False
        return True

    def _spilled_pending(self) -> bool:
        return any(entry["kind"] == "batch" for entry in self.spool.pending())

    def _back_online(self) -> None:
        if self.unreachable_since is not None:
            down = time.monotonic() - self.unreachable_since
            log.warning("Tracking server reachable again after %.0f s; sending the backlog.", down)
            self.unreachable_since = None
            self._files_wake.set()

    def _went_unreachable(self, exc: BaseException) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
            log.warning(
                "Tracking server unreachable, retrying (training goes on; nothing is lost): %s",
                reason,
            )

    def _take_memory(self) -> tuple[list[Any], dict[str, str], dict[str, str]]:
        with self._lock:
            taken = (self._metrics, self._run_tags, self._experiment_tags)
            self._metrics, self._run_tags, self._experiment_tags = [], {}, {}
        return taken

    def _flush_memory(self) -> None:
        metrics, run_tags, experiment_tags = self._take_memory()
        run_tags = {**run_tags, keys.HEARTBEAT: _now_ms()}
        try:
            self.deliverer.send_batch(metrics, run_tags, experiment_tags)
        except BaseException:
            with self._lock:  # put it back, ahead of anything newer
                self._metrics = metrics + self._metrics
                self._run_tags = {**run_tags, **self._run_tags}
                self._experiment_tags = {**experiment_tags, **self._experiment_tags}
            raise
        self.sent += len(metrics)

    def _spill_memory(self) -> None:
        """Move what is in memory to the spool, behind what is already there."""
        metrics, run_tags, experiment_tags = self._take_memory()
        run_tags = {k: v for k, v in run_tags.items() if k not in LIVE_ONLY_TAGS}
        if not (metrics or run_tags or experiment_tags):
            return
        token, path = self.spool.file_slot("batch.json")
        batch = {"metrics": metrics, "tags": run_tags, "experiment_tags": experiment_tags}
        path.write_text(json.dumps(batch), encoding="utf-8")
        self.spool.append({"kind": "batch", "token": token, "file": "batch.json"})

    def _poll_stop(self) -> None:
        now = time.monotonic()
        if now - self._last_stop_poll < self.stop_poll_interval:
            return
        self._last_stop_poll = now
        run = self.tracking.get_run(self.run_id)
        if run.data.tags.get(keys.STOP_REQUESTED):
            self.stop_requested.set()

    @property
    def refused(self) -> str | None:
        """Why an item could not be stored (the first such), or None."""
        return self.deliverer.refused[0] if self.deliverer.refused else None

    def close(self, status: str | None = None, wait_s: float = 900.0) -> bool:
        """Stop the sender, journal the run's end (`status`), and deliver for up to `wait_s`
        seconds. Returns True when everything reached the server; otherwise the rest stays in
        the spool for `deliver_pending`."""
        self._closing.set()
        self._wake.set()
        self._files_wake.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._threads = []
        self._spill_memory()  # from here on one thread delivers everything, in order
        if status is not None:
            end_time = int(time.time() * 1000)
            self.spool.append({"kind": "end", "status": status, "end_time": end_time})
        deadline = time.monotonic() + wait_s
        backoff = 0.5
        while True:
            if self._send_files() and not self.spool.pending():
                self.spool.release()
                self.spool.remove()
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if backoff >= 2:
                log.warning("%d item(s) unsent; retrying for %.0f s", self._backlog(), left)
            time.sleep(min(backoff, left))  # a retry interval, not a wait for a state
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        log.error(
            "Tracking server still unreachable: %d item(s) of run %s stay in %s and are sent "
            "on the next start (or `activelab runs sync`).",
            self._backlog(), self.run_id, self.spool.folder,
        )  # fmt: skip
        self.spool.release()
        return False

    def _backlog(self) -> int:
        return len(self.spool.pending())


def deliver_pending(home: str | Path, tracking: Tracking) -> dict[str, int]:
    """Send what earlier runs left in the spool (runs whose process no longer holds it).
    Returns counts: runs delivered, items sent, runs still pending."""
    counts = {"runs": 0, "items": 0, "pending": 0}
    root = outbox_root(home)
    if not root.is_dir():
        return counts
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        sent = _deliver_spool(Spool(folder), tracking)
        if sent is False:
            counts["pending"] += 1
        elif sent is not None:
            counts["runs"] += 1
            counts["items"] += sent
    return counts


def deliver_run(home: str | Path, tracking: Tracking, run_id: str) -> bool:
    """Send what the ended process of `run_id` left in this machine's spool (its last
    metrics, checkpoints and its end, when it ended during an outage); True if it sent any."""
    folder = outbox_root(home) / run_id
    return folder.is_dir() and bool(_deliver_spool(Spool(folder), tracking))


def _deliver_spool(spool: Spool, tracking: Tracking) -> int | bool | None:
    """Items sent from one spool (then removed); None when it is not this store's or its run's
    process still holds it; False when sending failed (it stays, for the next look)."""
    try:
        manifest = spool.manifest()
    except (OSError, ValueError):
        return None
    if manifest.get("tracking_uri") != tracking.uri or not spool.acquire():
        return None  # another store's, or its run is still live
    try:
        deliverer = Deliverer(tracking, manifest["run_id"], manifest["experiment_id"], spool)
        sent = deliverer.deliver_backlog()
    except Exception as exc:
        log.warning("Unsent items of run %s stay pending: %s", manifest.get("run_id"), exc)
        spool.release()
        return False
    spool.release()
    spool.remove()
    return sent
