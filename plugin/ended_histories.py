"""Downsampled metric histories of runs that have ended, kept in memory.

An ended run's metrics no longer change, so a page that shows it again (the Compare page
after a run is added, an axis switched, a reopen) need not read its points again: MLflow's
store-side sampling scans every logged point of a run (MLflow 3.17 ranks them all in SQL),
~0.05 s per 10,000 points on sqlite. The entry is keyed by what a change would move: the run's
status, end time and the metric's latest value, all read with the run anyway. (A late value
for an older step, e.g. delivered by `activelab runs sync`, moves none of them; it shows after
the app restarts.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activelab.tracking import MetricSeries

ENDED = ("FINISHED", "FAILED", "KILLED")
LIMIT = 1024  # curves kept (each at most a few thousand points): tens of MB at worst


class EndedRunHistories:
    """A bounded, thread-safe memo of (run, metric, sampling) -> MetricSeries for ended runs."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.hits = 0  # curves served from memory (the Compare benchmark reports them)
        self._entries: OrderedDict[tuple, MetricSeries] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(run: Any, metric: str, max_points: int, start_step: int | None) -> tuple | None:
        """The memo key of one curve of `run` (an MLflow Run); None while the run is active."""
        info = run.info
        if info.status not in ENDED or not info.end_time:
            return None
        latest = run.data.metrics.get(metric)
        return (info.run_id, metric, max_points, start_step, info.status, info.end_time, latest)

    def get(self, key: tuple | None) -> MetricSeries | None:
        if key is None:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return found

    def put(self, key: tuple | None, series: MetricSeries) -> None:
        if key is None:
            return
        with self._lock:
            self._entries[key] = series
            self._entries.move_to_end(key)
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
