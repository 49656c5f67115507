"""Card figures written after the fact, off an interactive path (the app's key press).

A label is durable once its file is written; the card's labeled count and "last modified"
are a cache of the labels (whoever reads a stale count fixes it), so the app hands them to one
background thread instead of making a key press wait ~10 ms (and more while a training run
writes to the same store) for two tag writes. The latest figures per model are kept, so a
burst of labels costs one write, and a steady stream of them at most one write a second (each
costs the app ~18 ms of CPU, which a training run beside it would rather have). `flush` waits
for them without that pause, e.g. before listing cards.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)
MIN_INTERVAL_S = 1.0  # between two writes of a stream of labels


class CardUpdates:
    def __init__(self) -> None:
        self._pending: dict[str, tuple[Any, dict[str, str]]] = {}
        self._busy = False
        self._flushing = 0  # callers waiting in `flush`: write at once
        self._last_write = 0.0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, model: Any, tags: dict[str, str]) -> None:
        """Write `tags` (merged with any still pending) to `model`'s card soon."""
        with self._changed:
            _, pending = self._pending.get(model.id, (model, {}))
            self._pending[model.id] = (model, {**pending, **tags})
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="activelab-card-updates", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (at most `timeout` s) until every pending figure is written; True if so."""
        with self._changed:
            self._flushing += 1
            self._changed.notify_all()
            try:
                return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)
            finally:
                self._flushing -= 1

    def _run(self) -> None:
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
                self._changed.wait_for(lambda: bool(self._pending))
                pause = self._last_write + MIN_INTERVAL_S - time.monotonic()
                if pause > 0:  # more labels may come meanwhile: they join this write
                    self._changed.wait_for(lambda: self._flushing > 0, pause)
                _, (model, tags) = self._pending.popitem()
                self._busy = True
            try:
                model.touch(tags)
                self._last_write = time.monotonic()
            except Exception:  # the labels are saved; the next reader fixes the count
                log.warning("Could not update the card of model %s", model.id, exc_info=True)


CARD_UPDATES = CardUpdates()
