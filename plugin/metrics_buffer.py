"""Buffered, batched logging for a training run.

The training loop only appends to a list; a background thread sends everything with
`log_batch` about once a second (DESIGN.md: per-step synchronous logging roughly doubles the
step time). The same thread refreshes the run's heartbeat and progress tags and polls the stop
request, so one round trip a second carries all of it. Nothing is dropped: a failed send is
retried, and what still cannot be sent at the end is written to a local file.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelab import keys

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
MAX_TAGS_PER_BATCH = 100


class MetricBuffer:
    """Collects metrics and tags for one run and sends them in batches from a thread."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        experiment_id: str,
        interval: float = 1.0,
        stop_poll_interval: float = 3.0,
        spill_path: Path | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.interval = interval
        self.stop_poll_interval = stop_poll_interval
        self.spill_path = spill_path
        self.stop_requested = threading.Event()
        self._metrics: list[Any] = []
        self._run_tags: dict[str, str] = {}
        self._experiment_tags: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._last_stop_poll = 0.0
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failures = 0

    # --- called from the training loop (cheap) ----------------------------------------------

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

    # --- the sender ---------------------------------------------------------------------------

    def start(self) -> MetricBuffer:
        self._thread = threading.Thread(target=self._run, name="activelab-metrics", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
                self._poll_stop()
            except Exception:  # keep the data; the next round retries
                self.failures += 1
                log.warning("Sending metrics failed; retrying.", exc_info=self.failures == 1)

    def _poll_stop(self) -> None:
        now = time.monotonic()
        if now - self._last_stop_poll < self.stop_poll_interval:
            return
        self._last_stop_poll = now
        run = self.client.get_run(self.run_id)
        if run.data.tags.get(keys.STOP_REQUESTED):
            self.stop_requested.set()

    def flush(self) -> None:
        """Send everything pending now (also called from the loop's thread at the end)."""
        from mlflow.entities import Metric, RunTag

        with self._lock:
            metrics, self._metrics = self._metrics, []
            run_tags, self._run_tags = self._run_tags, {}
            experiment_tags, self._experiment_tags = self._experiment_tags, {}
        run_tags[keys.HEARTBEAT] = str(int(time.time() * 1000))
        tags = [RunTag(k, v) for k, v in run_tags.items()]
        sent = 0
        try:
            # The first batch carries the tags; later ones only metrics (1,000 per call).
            while tags or sent < len(metrics):
                chunk = metrics[sent : sent + MAX_METRICS_PER_BATCH]
                entities = [Metric(k, float(v), stamp, step) for k, v, stamp, step in chunk]
                self.client.log_batch(self.run_id, metrics=entities, tags=tags[:MAX_TAGS_PER_BATCH])
                tags = tags[MAX_TAGS_PER_BATCH:]
                sent += len(chunk)
                self.sent += len(chunk)
            while experiment_tags:
                key, value = next(iter(experiment_tags.items()))
                self.client.set_experiment_tag(self.experiment_id, key, value)
                del experiment_tags[key]
        except BaseException:
            with self._lock:  # put back what was not sent, ahead of anything newer
                self._metrics = metrics[sent:] + self._metrics
                self._run_tags = {**{t.key: t.value for t in tags}, **self._run_tags}
                self._experiment_tags = {**experiment_tags, **self._experiment_tags}
            raise

    def close(self, attempts: int = 5) -> None:
        """Stop the thread and send the rest; spill to a file what cannot be sent."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for attempt in range(attempts):
            try:
                self.flush()
                return
            except Exception:
                log.warning("Final metric flush failed (attempt %d).", attempt + 1, exc_info=True)
                time.sleep(min(2**attempt, 8))
        self._spill()

    def _spill(self) -> None:
        if self.spill_path is None:
            return
        with self._lock:
            metrics, self._metrics = self._metrics, []
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spill_path.open("a", encoding="utf-8") as handle:
            for key, value, stamp, step in metrics:
                record = {"key": key, "value": value, "step": step, "timestamp": stamp}
                handle.write(json.dumps(record) + "\n")
        log.error("Could not send %d metrics; they are saved in %s.", len(metrics), self.spill_path)
