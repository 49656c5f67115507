"""Follows one training run through MLflow: downsampled curves, the points logged since, and
the figures of the progress line (epoch, step, it/s, ETA, current and average loss, trend).

It reads only MLflow, so it follows a run started from the app, from Python or from the CLI,
on this machine or another one, alike.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from activelab import keys
from activelab.runs import ACTIVE, checked_run, target_epochs
from activelab.tracking import HISTORY_POINTS, MetricSeries

if TYPE_CHECKING:
    from activelab.tracking import Tracking

STEP_PREFIX = "loss/"  # per-step losses: loss/<task>, loss/total (x = global step)
EPOCH_PREFIXES = ("epoch/", "val/", "eval/")  # per-epoch figures (x = epoch)
TOTAL = "loss/total"
# A curve that grew past this many points by streaming is read again, downsampled.
MAX_SHOWN_POINTS = 3 * HISTORY_POINTS


# Per-epoch figures drawn as small multiples, one panel per family (title by family).
# per-epoch figures that share an axis; every other figure (mse, active dimensions, kl...)
# gets a plot of its own: their scales have nothing in common
EPOCH_FAMILIES = {
    "losses": "Losses per epoch",
    "accuracies": "Accuracies per epoch",
}
OTHER = "other"


def epoch_family(key: str) -> str:
    """`epoch/loss/kl`, `val/loss/total` -> losses; `eval/classification/unlabeled_accuracy`
    -> accuracies; `eval/reconstruction/mse`, `eval/kl/active_dims` -> other."""
    if "/loss/" in f"/{key}":
        return "losses"
    if "accuracy" in key.rsplit("/", 1)[-1]:
        return "accuracies"
    return OTHER


def is_curve(key: str) -> bool:
    return key.startswith(STEP_PREFIX) or key.startswith(EPOCH_PREFIXES)


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average (`weight` 0 = raw, 0.99 = heavy)."""
    if weight <= 0:
        return list(values)
    out, last, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        count += 1
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**count))
    return out


def trend(values: list[float], window: int = 50, tolerance: float = 0.02) -> str:
    """'falling', 'flat' or 'rising': the mean of the last `window` points against the
    `window` before them, with a relative `tolerance`. '' while there are too few points."""
    window = max(1, min(window, len(values) // 2))
    if len(values) < 4:
        return ""
    recent = sum(values[-window:]) / window
    before = sum(values[-2 * window : -window]) / window
    scale = max(abs(before), 1e-12)
    change = (recent - before) / scale
    if change < -tolerance:
        return "falling"
    if change > tolerance:
        return "rising"
    return "flat"


@dataclass
class RunFigures:
    """What the progress line shows."""

    status: str
    epoch: int = 0
    target_epoch: int = 0
    step: int = 0
    run_steps: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    steps_per_s: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    current_loss: float | None = None
    average_loss: float | None = None
    trend: str = ""
    error: str | None = None


@dataclass
class RunMonitor:
    """The curves of one run, kept in step with MLflow by `poll()`."""

    tracking: Tracking
    run_id: str
    max_points: int = HISTORY_POINTS
    curves: dict[str, MetricSeries] = field(default_factory=dict)
    run: Any = None
    started_ms: int = 0

    def load(self) -> dict[str, MetricSeries]:
        """Every curve of the run, downsampled (one bulk read per metric)."""
        self.run = checked_run(self.tracking, self.run_id)
        self.started_ms = int(self.run.info.start_time or 0)
        wanted = [key for key in sorted(self.run.data.metrics) if is_curve(key)]
        found = self.tracking.metric_histories_many([self.run_id], wanted, self.max_points)
        self.curves = {key: found[key][self.run_id] for key in wanted}
        return self.curves

    @property
    def status(self) -> str:
        return self.run.info.status if self.run is not None else ""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def poll(self) -> dict[str, MetricSeries]:
        """The points logged since the last look ({key: new points}, new curves included).

        A curve that grew past MAX_SHOWN_POINTS is read again downsampled; its new series
        then replaces the old one (marked by a first step <= the old last step)."""
        self.run = checked_run(self.tracking, self.run_id)
        fresh: dict[str, MetricSeries] = {}
        wanted = [key for key in sorted(self.run.data.metrics) if is_curve(key)]
        starts: dict[str, int | None] = {}
        for key in wanted:
            known = self.curves.get(key)
            # a new curve, or one grown too long, is read whole (downsampled); else the tail
            whole = known is None or len(known) == 0 or len(known) > MAX_SHOWN_POINTS
            starts[key] = None if whole or known is None else known.steps[-1] + 1
        read = self.tracking.metric_histories_many([self.run_id], wanted, self.max_points, starts)
        for key in wanted:
            series = read[key][self.run_id]
            if starts[key] is None:
                self.curves[key] = series
                if len(series):
                    fresh[key] = series
                continue
            known = self.curves[key]
            if len(series):
                known.steps.extend(series.steps)
                known.values.extend(series.values)
                known.timestamps.extend(series.timestamps)
                fresh[key] = series
        return fresh

    def figures(self, now: float | None = None) -> RunFigures:
        """Progress, speed, ETA, loss and trend from the run's progress tag and curves."""
        run = self.run
        tags = run.data.tags
        progress: dict[str, Any] = {}
        if tags.get(keys.PROGRESS):
            try:
                progress = json.loads(tags[keys.PROGRESS])
            except ValueError:
                progress = {}
        start_epoch = int(tags.get(keys.START_EPOCH, 0) or 0)
        target = target_epochs(run)
        run_steps = int(progress.get("run_steps", 0) or 0)
        total_steps = int(progress.get("total_steps", 0) or 0)
        finished = run.info.status == "FINISHED"
        fraction = 1.0 if finished else (run_steps / total_steps if total_steps else 0.0)
        now_ms = (now if now is not None else time.time()) * 1000
        end_ms = run.info.end_time or now_ms
        elapsed = max(0.0, (end_ms - (run.info.start_time or end_ms)) / 1000)
        began = progress.get("started")
        training_s = max(1e-9, (end_ms / 1000) - float(began)) if began and run_steps else None
        total = self.curves.get(TOTAL)
        values = total.values if total is not None else []
        return RunFigures(
            status=run.info.status,
            epoch=int(progress.get("epoch", start_epoch) or start_epoch),
            target_epoch=start_epoch + target,
            step=int(progress.get("step", 0) or 0),
            run_steps=run_steps,
            total_steps=total_steps,
            fraction=min(1.0, fraction),
            steps_per_s=run_steps / training_s if training_s else None,
            samples_per_s=progress.get("samples_per_s"),
            eta_s=progress.get("eta_s") if self.active else None,
            elapsed_s=elapsed,
            current_loss=values[-1] if values else None,
            average_loss=sum(values) / len(values) if values else None,
            trend=trend(values),
            error=tags.get(keys.ERROR) or None,
        )

    def rows(self) -> list[dict[str, Any]]:
        """Every shown point as one row (the CSV export)."""
        out = []
        for key, series in self.curves.items():
            for step, value, stamp in zip(
                series.steps, series.values, series.timestamps, strict=True
            ):
                out.append(
                    {
                        "run_id": self.run_id,
                        "metric": key,
                        "step": step,
                        "value": value,
                        "timestamp_ms": stamp,
                        "elapsed_s": round((stamp - self.started_ms) / 1000, 3),
                    }
                )
        return out
