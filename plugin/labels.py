"""A model's live labels: an append-only log of change events in MLflow artifacts.

Every change (set, clear, import, undo, redo) is one small JSON file under
`activelab/labels/log/` in the experiment's artifact location, named by a time-ordered id.
Writers never rewrite a file, so two processes labeling one model lose nothing; the state is
the fold of all events in id order. Every SNAPSHOT_EVERY events a writer also stores the
folded state under `activelab/labels/snapshots/`, so opening a model reads one snapshot and
the few events after it instead of the whole log.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from activelab import keys
from activelab.connectivity import explain_refusal
from activelab.errors import InvalidLabelError, LabelFileError, NothingToUndoError
from activelab.label_csv import SampleFiles, read_csv, write_csv

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import numpy as np

    from activelab.dataset import DatasetInfo
    from activelab.tracking import ArtifactFolder

log = logging.getLogger(__name__)

LOG_DIR = f"{keys.LABELS_DIR}/log"
SNAPSHOT_DIR = f"{keys.LABELS_DIR}/snapshots"
SNAPSHOT_EVERY = 50
UNDO_DEPTH = 100
# A log file that still does not parse after this long is a crashed write, not a slow one.
UNREADABLE_GRACE_S = 30.0

SET, CLEAR, IMPORT, UNDO, REDO = "set", "clear", "import", "undo", "redo"
KINDS = {SET, CLEAR, IMPORT, UNDO, REDO}
# Event ids as `_next_id` makes them: 19 digits of nanoseconds, a dash, 8 hex digits. Files
# read from a store are untrusted: an id is only ever used (in a path, as the watermark the
# next id counts from) after it matched this.
EVENT_ID = re.compile(r"^\d{19}-[0-9a-f]{8}$")

Label = int | None
Changes = dict[int, tuple[Label, Label]]  # sample index -> (old label, new label)


def _author() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@dataclass
class LabelEvent:
    """One change to a model's labels."""

    id: str
    kind: str
    changes: Changes
    author: str
    time: float
    target: str | None = None  # the event an undo reverts or a redo re-applies

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "changes": {str(i): [old, new] for i, (old, new) in self.changes.items()},
            "author": self.author,
            "time": self.time,
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LabelEvent:
        changes = {int(i): (pair[0], pair[1]) for i, pair in raw["changes"].items()}
        return cls(raw["id"], raw["kind"], changes, raw["author"], raw["time"], raw.get("target"))


@dataclass
class LabelState:
    """The fold of a label log: current labels plus the undo and redo stacks."""

    labels: dict[int, int] = field(default_factory=dict)
    undo: list[LabelEvent] = field(default_factory=list)
    redo: list[LabelEvent] = field(default_factory=list)
    count: int = 0  # events folded
    watermark: str = ""  # the largest event id folded

    def apply(self, event: LabelEvent) -> None:
        for index, (_old, new) in event.changes.items():
            if new is None:
                self.labels.pop(index, None)
            else:
                self.labels[index] = new
        if event.kind == UNDO:
            target = _pop_by_id(self.undo, event.target)
            if target is not None:
                self.redo.append(target)
        elif event.kind == REDO:
            target = _pop_by_id(self.redo, event.target)
            if target is not None:
                self.undo.append(target)
        else:
            self.undo.append(event)
            self.redo.clear()
        del self.undo[:-UNDO_DEPTH]
        del self.redo[:-UNDO_DEPTH]
        self.count += 1
        self.watermark = max(self.watermark, event.id)

    def to_json(self) -> bytes:
        indices = sorted(self.labels)
        return json.dumps(
            {
                "version": 1,
                "count": self.count,
                "watermark": self.watermark,
                "indices": indices,
                "labels": [self.labels[i] for i in indices],
                "undo": [e.to_dict() for e in self.undo],
                "redo": [e.to_dict() for e in self.redo],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LabelState:
        raw = json.loads(data)
        return cls(
            labels=dict(zip(raw["indices"], raw["labels"], strict=True)),
            undo=[LabelEvent.from_dict(e) for e in raw["undo"]],
            redo=[LabelEvent.from_dict(e) for e in raw["redo"]],
            count=raw["count"],
            watermark=raw["watermark"],
        )


def _pop_by_id(stack: list[LabelEvent], event_id: str | None) -> LabelEvent | None:
    for position in range(len(stack) - 1, -1, -1):
        if stack[position].id == event_id:
            return stack.pop(position)
    return None


def _parse_event(data: bytes | None) -> LabelEvent | None:
    if not data:
        return None
    try:
        return LabelEvent.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def event_problem(event: LabelEvent, file_id: str, info: DatasetInfo) -> str | None:
    """Why a parsed event must not be folded (a hostile or damaged file), or None."""
    if event.id != file_id:
        return f"it claims the id {event.id!r}"
    if event.kind not in KINDS:
        return f"unknown kind {event.kind!r}"
    if event.target is not None and not (
        isinstance(event.target, str) and EVENT_ID.match(event.target)
    ):
        return "its target is no event id"
    classes = len(info.classes)
    for index, pair in event.changes.items():
        if not 0 <= index < info.size:
            return f"sample index {index} is outside the data set (0 to {info.size - 1})"
        for label in pair:
            if label is not None and not (
                isinstance(label, int) and not isinstance(label, bool) and 0 <= label < classes
            ):
                return f"label {label!r} is not a class index (0 to {classes - 1})"
    return None


def labels_digest(labels: Mapping[int, int]) -> str:
    """A short, stable digest of a label set (used as the MLflow dataset digest)."""
    body = "".join(f"{i},{labels[i]}\n" for i in sorted(labels))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


class LabelStore:
    """The labels of one model. Thread-safe; every change is durable when the call returns."""

    def __init__(
        self,
        folder: ArtifactFolder,
        info: DatasetInfo,
        on_change: Any = None,
        author: str | None = None,
        before_write: Any = None,
    ) -> None:
        self.folder = folder
        self.info = info
        self.author = author or _author()
        self._on_change = on_change  # called with (event, state) after every change
        self._before_write = before_write  # raises when no change may be written now
        self._lock = threading.RLock()
        self._state = LabelState()
        self._events: dict[str, LabelEvent] = {}  # events read since the state's base
        self._seen: set[str] = set()  # log ids folded (or given up on)
        self._unreadable: dict[str, float] = {}
        self._reported: set[str] = set()  # hostile or damaged files already logged
        self._has_full_history = False
        self._loaded = False
        self._snapshot_count = 0
        self._array_cache: tuple[int, np.ndarray] | None = None
        self._version = 0

    # --- reading -----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Pick up changes made elsewhere; True if anything changed."""
        with self._lock:
            ids = self._list_log()
            if not self._loaded:
                self._cold_load(ids)
                self._notify(None)
                return True
            new = sorted(ids - self._seen)
            changed = self._absorb(new) if new else False
            if changed:
                self._notify(None)
            return changed

    def _list_log(self) -> set[str]:
        """Ids of the log's files; a file not named like an event is reported and ignored."""
        ids = set()
        for name in self.folder.list(LOG_DIR):
            if not name.endswith(".json"):
                continue
            if EVENT_ID.match(name[:-5]):
                ids.add(name[:-5])
            elif name not in self._reported:
                self._reported.add(name)
                log.warning("Ignoring %r in the label log: not an event file name.", name)
        return ids

    def _cold_load(self, ids: set[str]) -> None:
        snapshots = sorted(n for n in self.folder.list(SNAPSHOT_DIR) if n.endswith(".json"))
        for name in reversed(snapshots):
            if not EVENT_ID.match(name[:-5]):
                continue  # snapshots are named by their watermark
            data = self.folder.read(f"{SNAPSHOT_DIR}/{name}")
            try:
                state = LabelState.from_json(data or b"")
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if state.watermark != name[:-5] or self._state_problem(state):
                log.warning("Ignoring the label snapshot %r: it does not check out.", name)
                continue
            covered = {i for i in ids if i <= state.watermark}
            if len(covered) == state.count:
                self._state = state
                self._seen = covered
                self._snapshot_count = state.count
                break
            # An event arrived late under this snapshot's watermark: replay the whole log.
            break
        else:
            self._has_full_history = True
        if not self._seen:
            self._state = LabelState()
            self._has_full_history = True
        self._loaded = True
        self._absorb(sorted(ids - self._seen))

    def _absorb(self, new_ids: list[str]) -> bool:
        contents = self.folder.read_many([f"{LOG_DIR}/{i}.json" for i in new_ids])
        fresh: list[LabelEvent] = []
        for event_id in new_ids:
            event = _parse_event(contents[f"{LOG_DIR}/{event_id}.json"])
            if event is None:
                self._note_unreadable(event_id)
                continue
            self._unreadable.pop(event_id, None)
            problem = event_problem(event, event_id, self.info)
            if problem is not None:  # reported once, skipped, never blocks later writes
                log.warning("Ignoring label event %s: %s.", event_id, problem)
                self._seen.add(event_id)
                continue
            fresh.append(event)
        if not fresh:
            return False
        fresh.sort(key=lambda e: e.id)
        if fresh[0].id < self._state.watermark:
            self._rebuild(fresh)
        else:
            for event in fresh:
                self._fold(event)
        self._version += 1
        return True

    def _fold(self, event: LabelEvent) -> None:
        self._state.apply(event)
        self._events[event.id] = event
        self._seen.add(event.id)

    def _rebuild(self, fresh: list[LabelEvent]) -> None:
        """Refold every event in id order (an event arrived under the watermark)."""
        events = dict(self._events)
        events.update({e.id: e for e in fresh})
        if not self._has_full_history:
            ids = sorted(self._list_log())
            contents = self.folder.read_many(
                [f"{LOG_DIR}/{i}.json" for i in ids if i not in events]
            )
            for path, data in contents.items():
                event = _parse_event(data)
                file_id = path.rsplit("/", 1)[-1][:-5]
                if event is not None and event_problem(event, file_id, self.info) is None:
                    events[event.id] = event
            self._has_full_history = True
        self._state = LabelState()
        self._events = {}
        for event in sorted(events.values(), key=lambda e: e.id):
            self._fold(event)

    def _state_problem(self, state: LabelState) -> str | None:
        classes = len(self.info.classes)
        for index, label in state.labels.items():
            if not (isinstance(index, int) and 0 <= index < self.info.size):
                return f"sample index {index!r}"
            if not (isinstance(label, int) and 0 <= label < classes):
                return f"label {label!r}"
        for event in (*state.undo, *state.redo):
            if event_problem(event, event.id, self.info) or not EVENT_ID.match(event.id):
                return f"event {event.id!r}"
        return None

    def _note_unreadable(self, event_id: str) -> None:
        first = self._unreadable.setdefault(event_id, time.monotonic())
        if time.monotonic() - first > UNREADABLE_GRACE_S:
            log.warning(
                "Label event %s does not parse; it was ignored (a crashed write).", event_id
            )
            self._seen.add(event_id)
            self._unreadable.pop(event_id, None)

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    @property
    def state(self) -> LabelState:
        with self._lock:
            self._ensure_loaded()
            return self._state

    def as_dict(self) -> dict[int, int]:
        """{sample index: class index} as of the last refresh or change."""
        return dict(self.state.labels)

    def as_array(self) -> np.ndarray:
        """int64 array over every sample: the class index, or -1 where unlabeled."""
        import numpy as np

        with self._lock:
            self._ensure_loaded()
            if self._array_cache is None or self._array_cache[0] != self._version:
                array = np.full(self.info.size, -1, dtype=np.int64)
                if self._state.labels:
                    idx = np.fromiter(self._state.labels.keys(), dtype=np.int64)
                    array[idx] = np.fromiter(self._state.labels.values(), dtype=np.int64)
                self._array_cache = (self._version, array)
            return self._array_cache[1].copy()

    def get(self, index: int) -> int | None:
        return self.state.labels.get(self._check_index(index))

    def __len__(self) -> int:
        return len(self.state.labels)

    @property
    def count(self) -> int:
        return len(self)

    @property
    def can_undo(self) -> bool:
        return bool(self.state.undo)

    @property
    def can_redo(self) -> bool:
        return bool(self.state.redo)

    def digest(self) -> str:
        return labels_digest(self.state.labels)

    def stats(self) -> dict[str, int]:
        """Labeled samples per class name (every class, zeros included)."""
        counts = dict.fromkeys(self.info.classes, 0)
        for label in self.state.labels.values():
            counts[self.info.classes[label]] += 1
        return counts

    def class_name(self, label: int | None) -> str | None:
        return None if label is None else self.info.classes[label]

    # --- validation --------------------------------------------------------------------------

    def _check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not _is_int_like(index):
            raise InvalidLabelError(f"Sample index {index!r} is not a whole number.")
        value = int(index)
        if not 0 <= value < self.info.size:
            raise InvalidLabelError(
                f"Sample index {value} is outside the data set {self.info.kind!r} "
                f"(0 to {self.info.size - 1})."
            )
        return value

    def resolve_label(self, label: Any) -> int:
        """A class index from a class index or a class name."""
        classes = self.info.classes
        original = label
        if not classes:
            raise InvalidLabelError(
                f"Data set {self.info.kind!r} has no classes to label with; "
                "give the data set its class names (e.g. dataset.classes)."
            )
        if isinstance(label, str):
            text = label.strip()
            if text in classes:
                return classes.index(text)
            if text.lstrip("-").isdigit():
                label = int(text)
        if _is_int_like(label) and not isinstance(label, bool) and 0 <= int(label) < len(classes):
            return int(label)
        shown = ", ".join(classes) if len(classes) <= 20 else f"{classes[0]} ... {classes[-1]}"
        raise InvalidLabelError(
            f"Label {original!r} is not a class of data set {self.info.kind!r}; "
            f"use a class name or index: {shown}."
        )

    # --- changing ----------------------------------------------------------------------------

    def set(self, index: int, label: Any) -> LabelEvent | None:
        """Label one sample (name or class index). Returns the change, or None if no-op."""
        return self.set_many({index: label})

    def set_many(
        self, labels: Mapping[int, Any] | Iterable[int], label: Any = None
    ) -> LabelEvent | None:
        """Label many samples in one change: a {index: label} mapping, or indices + one label."""
        pairs: Iterable[tuple[int, Any]]
        if label is not None:
            pairs = ((i, label) for i in labels)
        else:  # a mapping, or (index, label) pairs
            pairs = dict(cast("Mapping[int, Any]", labels)).items()
        wanted = {self._check_index(i): self.resolve_label(v) for i, v in pairs}
        return self._change(SET, wanted)

    def clear(self, indices: int | Iterable[int]) -> LabelEvent | None:
        """Remove the labels of one or many samples."""
        if _is_int_like(indices):
            indices = [indices]  # type: ignore[list-item]
        return self._change(CLEAR, {self._check_index(i): None for i in indices})  # type: ignore[union-attr]

    def clear_all(self) -> LabelEvent | None:
        with self._lock:
            self.refresh()
            return self._change(CLEAR, dict.fromkeys(self._state.labels))

    def _change(self, kind: str, wanted: Mapping[int, Label]) -> LabelEvent | None:
        with self._lock:
            self.refresh()
            current = self._state.labels
            changes = {
                i: (current.get(i), new) for i, new in wanted.items() if current.get(i) != new
            }
            if not changes:
                return None
            return self._commit(kind, changes)

    def undo(self) -> LabelEvent:
        """Revert the latest change not yet undone (any session's)."""
        with self._lock:
            self.refresh()
            if not self._state.undo:
                raise NothingToUndoError("Nothing to undo: the label history is empty.")
            target = self._state.undo[-1]
            current = self._state.labels
            changes = {i: (current.get(i), old) for i, (old, _new) in target.changes.items()}
            return self._commit(UNDO, changes, target=target.id)

    def redo(self) -> LabelEvent:
        """Re-apply the latest undone change."""
        with self._lock:
            self.refresh()
            if not self._state.redo:
                raise NothingToUndoError(
                    "Nothing to redo: no change has been undone since the last edit."
                )
            target = self._state.redo[-1]
            current = self._state.labels
            changes = {i: (current.get(i), new) for i, (_old, new) in target.changes.items()}
            return self._commit(REDO, changes, target=target.id)

    def _next_id(self) -> str:
        # Never sort before what this store has seen, even if the clock is behind.
        seen_ns = int(self._state.watermark[:19]) if self._state.watermark else 0
        stamp = max(time.time_ns(), seen_ns + 1)
        return f"{stamp:019d}-{uuid.uuid4().hex[:8]}"

    def _commit(self, kind: str, changes: Changes, target: str | None = None) -> LabelEvent:
        if self._before_write is not None:
            self._before_write()
        event = LabelEvent(self._next_id(), kind, changes, self.author, time.time(), target)
        with explain_refusal("change this model's labels", "EDIT"):
            self.folder.write(f"{LOG_DIR}/{event.id}.json", event.to_json())
        self._fold(event)
        self._version += 1
        if self._state.count - self._snapshot_count >= SNAPSHOT_EVERY:
            self._write_snapshot()
        self._notify(event)
        return event

    def _notify(self, event: LabelEvent | None) -> None:
        """Tell the owner (the model card) about our change, or about others' (event None)."""
        if self._on_change is None:
            return
        try:
            self._on_change(event, self._state)
        except Exception:  # the change itself is saved; only a side effect failed
            log.warning("Labels saved, but updating the model card failed.", exc_info=True)

    def _write_snapshot(self) -> None:
        try:
            self.folder.write(f"{SNAPSHOT_DIR}/{self._state.watermark}.json", self._state.to_json())
            self._snapshot_count = self._state.count
            for subdir in (LOG_DIR, SNAPSHOT_DIR):  # what killed writers left half-written
                self.folder.sweep_temp_files(subdir)
        except Exception:  # a snapshot is a cache; the log stays the truth
            log.warning("Could not write a label snapshot; will retry later.", exc_info=True)

    # --- CSV ---------------------------------------------------------------------------------

    def parse_csv(self, text: str, files: SampleFiles | None = None) -> dict[int, int]:
        """{index: class} from a labels CSV (`activelab.label_csv`: by sample index, or by
        file when `files` says which file each sample is); errors name the line."""
        return read_csv(text, self.resolve_label, self._check_index, self.info.classes, files)

    def import_csv(
        self, text: str, replace: bool = False, files: SampleFiles | None = None
    ) -> LabelEvent | None:
        """Apply a labels CSV as one change; `replace` also clears labels not in the file."""
        wanted: dict[int, Label] = dict(self.parse_csv(text, files))
        with self._lock:
            self.refresh()
            if replace:
                for index in self._state.labels:
                    wanted.setdefault(index, None)
            return self._change(IMPORT, wanted)

    def to_csv(self, files: SampleFiles | None = None) -> str:
        """`sample_index,label` for every labeled sample, by index (labels are class names);
        with `files`, `sample_index,path,label`."""
        return write_csv(self.state.labels, self.info.classes, files)


def decode_csv(raw: bytes, source: str) -> str:
    """UTF-8 text (with or without Excel's byte-order mark), or a clear error."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LabelFileError(
            f"{source} is not UTF-8 text (line {line} has the byte 0x{raw[exc.start]:02x}); "
            "save it as CSV UTF-8 and import it again. Nothing was changed."
        ) from None


def _is_int_like(value: Any) -> bool:
    try:
        import numpy as np

        if isinstance(value, np.integer):
            return True
    except ImportError:
        pass
    return isinstance(value, int)
