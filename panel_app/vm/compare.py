"""Compare: runs across models side by side — overlaid curves, the params that differ, final
and best figures, and the labels each run trained on. Reads are bulk and downsampled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import param

from activelab.humanize import run_state
from activelab.runs import RunSummary, checked_run, checked_runs, search_runs
from activelab.tracking import MetricSeries

if TYPE_CHECKING:
    from activelab.models import Lab
    from activelab.panel_app.vm.state import AppState
    from activelab.registry import RegisteredVersion

X_AXES = {"step": "Step", "epoch": "Epoch", "wall": "Wall time (s)"}
EPOCH_METRIC = "epoch"  # logged at each epoch's last step with the epoch as value
MAX_CANDIDATES = 300
# Points per curve: an overlay of up to 10 runs on a ~1000 px wide plot needs no more, and
# each point costs on the wire (10 runs x 5 metrics through a server: 2.3 s at 1000, 1.5 s
# at 500, measured here).
COMPARE_POINTS = 500


def higher_is_better(key: str) -> bool:
    """Accuracy-like figures are best when high; losses and errors when low."""
    name = key.rsplit("/", 1)[-1].lower()
    return any(word in name for word in ("acc", "f1", "precision", "recall", "auc", "iou"))


@dataclass(frozen=True)
class Candidate:
    """A run that can be compared, with the model it belongs to."""

    model_id: str
    model_name: str
    summary: RunSummary
    run: Any

    @property
    def label(self) -> str:
        return f"{self.model_name} / {self.summary.name}"


@dataclass
class Curve:
    run_id: str
    label: str
    metric: str
    x: np.ndarray
    y: np.ndarray
    step: np.ndarray
    time: np.ndarray  # epoch ms


class CompareViewModel(param.Parameterized):
    model_filter = param.List(default=[], doc="Model ids to pick runs from ([] = all).")
    status_filter = param.String(default="", doc="Only runs with this MLflow status.")
    tag_filter = param.String(default="", doc="'key=value' a run's tags must hold.")
    selected = param.List(default=[], doc="Run ids being compared, in order.")
    metrics = param.List(default=["loss/total"], doc="Metric keys to overlay.")
    x_axis: param.Selector[str] = param.Selector(default="step", objects=list(X_AXES))
    only_differing = param.Boolean(default=True, doc="Show only params that differ.")

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.candidates: dict[str, Candidate] = {}
        self.curves: list[Curve] = []

    @property
    def lab(self) -> Lab:
        return self.state.lab

    # --- what can be compared -------------------------------------------------------------

    def models(self) -> dict[str, str]:
        """name -> id of every model."""
        return {c.name: c.id for c in self.lab.list_models()}

    def find_runs(self) -> list[Candidate]:
        """Training runs of the chosen models (all by default), newest first, filtered."""
        names = {v: k for k, v in self.models().items()}
        ids = [m for m in self.model_filter if m in names] or list(names)
        if not ids:
            self.candidates = {}
            return []
        statuses = (self.status_filter,) if self.status_filter else None
        runs = search_runs(
            self.lab.tracking, ids, kind="train", statuses=statuses, max_results=MAX_CANDIDATES
        )
        runs = checked_runs(self.lab.tracking, runs)
        wanted = self._tag_filter()
        found = [
            Candidate(r.info.experiment_id, names.get(r.info.experiment_id, "?"),
                      RunSummary.from_run(r), r)
            for r in runs
            if all(r.data.tags.get(k) == v for k, v in wanted.items())
        ]  # fmt: skip
        self.candidates = {c.summary.run_id: c for c in found}
        return found

    def _tag_filter(self) -> dict[str, str]:
        text = self.tag_filter.strip()
        if not text:
            return {}
        if "=" not in text:
            raise ValueError(f"Filter tags as key=value (e.g. team=vision), not {text!r}.")
        key, value = text.split("=", 1)
        return {key.strip(): value.strip()}

    def refresh_selected(self) -> None:
        """Read the chosen runs again (their status and figures move while they train)."""
        for run_id in self.selected:
            self.candidates.pop(run_id, None)
            self.candidate(run_id)

    def candidate(self, run_id: str) -> Candidate:
        if run_id not in self.candidates:
            run = checked_run(self.lab.tracking, run_id)
            experiment = self.lab.tracking.get_experiment(run.info.experiment_id)
            name = experiment.name if experiment is not None else "?"
            self.candidates[run_id] = Candidate(
                run.info.experiment_id, name, RunSummary.from_run(run), run
            )
        return self.candidates[run_id]

    def registrable(self) -> dict[str, str]:
        """The chosen runs that finished (a label for each, to its run id): what can go into
        MLflow's Model Registry."""
        chosen = [self.candidate(run_id) for run_id in self.selected]
        return {c.label: c.summary.run_id for c in chosen if c.summary.status == "FINISHED"}

    def register(self, run_id: str, alias: str) -> RegisteredVersion:
        """A chosen run's logged model into the registry, under its model's name."""
        model = self.lab.get_model(self.candidate(run_id).model_id)
        return model.register(run=run_id, alias=alias.strip() or None)

    def metric_keys(self) -> list[str]:
        """Every metric any selected run has (system metrics last)."""
        found: set[str] = set()
        for run_id in self.selected:
            found.update(self.candidate(run_id).run.data.metrics)
        found.discard(EPOCH_METRIC)
        return sorted(found, key=lambda k: (k.startswith("system/"), k))

    # --- curves -----------------------------------------------------------------------------

    def load_curves(self, max_points: int = COMPARE_POINTS) -> list[Curve]:
        """The chosen metrics of the selected runs: one bulk, downsampled read per metric.

        Reads may overlap (a person changes the selection while the last one loads): each
        builds its own list, and only a read of what is still asked for becomes `curves`."""
        self.refresh_selected()  # the table's status and figures as of now
        asked = (list(self.selected), list(self.metrics), self.x_axis)
        run_ids, metrics, _ = asked
        curves: list[Curve] = []
        if run_ids and metrics:
            curves = self._read_curves(run_ids, metrics, max_points)
        if asked == (list(self.selected), list(self.metrics), self.x_axis):
            self.curves = curves
        return curves

    def _read_curves(self, run_ids: list[str], metrics: list[str], max_points: int) -> list[Curve]:
        tracking = self.lab.tracking
        runs = {run_id: self.candidate(run_id).run for run_id in run_ids}
        by_epoch = self.x_axis == "epoch"  # needs each run's step -> epoch marks
        wanted = list(dict.fromkeys([*metrics, *([EPOCH_METRIC] if by_epoch else [])]))
        every = tracking.metric_histories_many(run_ids, wanted, max_points, runs=runs)
        epochs: dict[str, MetricSeries] = every[EPOCH_METRIC] if by_epoch else {}
        curves = []
        for metric in metrics:
            histories = every[metric]
            for run_id in run_ids:
                series = histories[run_id]
                if not len(series):
                    continue
                candidate = self.candidate(run_id)
                step = np.asarray(series.steps, dtype=np.int64)
                stamps = np.asarray(series.timestamps, dtype=np.int64)
                x = self._x(step, stamps, metric, candidate, epochs.get(run_id))
                curves.append(
                    Curve(run_id, candidate.label, metric, x,
                          np.asarray(series.values, dtype=np.float64), step, stamps)
                )  # fmt: skip
        return curves

    def _x(
        self,
        step: np.ndarray,
        stamps: np.ndarray,
        metric: str,
        candidate: Candidate,
        epochs: MetricSeries | None,
    ) -> np.ndarray:
        if self.x_axis == "wall":
            return (stamps - int(candidate.run.info.start_time or 0)) / 1000.0
        if self.x_axis == "epoch" and not metric.startswith(("epoch/", "val/", "eval/")):
            # per-step figures: the epoch (fractional) from the run's step -> epoch marks
            if epochs is None or not len(epochs):
                return step.astype(np.float64)
            marks_step = np.asarray([0, *epochs.steps], dtype=np.float64)
            marks_epoch = np.asarray(
                [epochs.values[0] - 1 if epochs.values else 0, *epochs.values], dtype=np.float64
            )
            return np.interp(step, marks_step, marks_epoch)
        return step.astype(np.float64)

    def curves_frame(self) -> pd.DataFrame:
        """The overlay as rows (the CSV export): run, model, metric, step, x, value, time."""
        rows = []
        for curve in self.curves:
            candidate = self.candidate(curve.run_id)
            rows.append(
                pd.DataFrame(
                    {
                        "run_id": curve.run_id,
                        "run_name": candidate.summary.name,
                        "model": candidate.model_name,
                        "metric": curve.metric,
                        "step": curve.step,
                        self.x_axis: curve.x,
                        "value": curve.y,
                        "timestamp_ms": curve.time,
                    }
                )
            )
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()

    # --- tables -----------------------------------------------------------------------------

    def params_table(self) -> pd.DataFrame:
        """Params as rows, runs as columns; only those that differ unless asked otherwise."""
        columns = {}
        for run_id in self.selected:
            candidate = self.candidate(run_id)
            columns[self._column(candidate)] = dict(candidate.run.data.params)
        frame = pd.DataFrame(columns).fillna("—")
        if frame.empty:
            return frame
        if self.only_differing and len(frame.columns) > 1:
            frame = frame[frame.nunique(axis=1) > 1]
        frame.index.name = "param"
        return frame.sort_index().reset_index()

    def figures_table(self) -> pd.DataFrame:
        """Per run: status, epochs, labels used, and the final and best of each chosen metric."""
        rows = []
        for run_id in self.selected:
            candidate = self.candidate(run_id)
            summary = candidate.summary
            row: dict[str, Any] = {
                "run": self._column(candidate),
                "status": run_state(summary.status),
                "epochs (this run)": summary.epochs,
                "epochs (lineage)": summary.lineage_epochs,
                "labels": summary.labeled_count,
                "labels digest": (summary.labels_digest or "")[:12],
            }
            for curve in (c for c in self.curves if c.run_id == run_id):
                values = curve.y[np.isfinite(curve.y)]
                if not len(values):
                    continue
                best = values.max() if higher_is_better(curve.metric) else values.min()
                row[f"{curve.metric} final"] = float(values[-1])
                row[f"{curve.metric} best"] = float(best)
            row["run_id"] = run_id
            rows.append(row)
        return pd.DataFrame(rows)

    @staticmethod
    def _column(candidate: Candidate) -> str:
        return f"{candidate.model_name} / {candidate.summary.name}"

    def run_url(self, run_id: str) -> str | None:
        return self.state.context.run_url(self.candidate(run_id).model_id, run_id)
