"""Evaluating a run's checkpoint: each task's metrics, rated by the thresholds the task
declares, logged to MLflow as an `eval` run nested under the run it evaluates (so it shows in
the MLflow UI and persists); and the analyzers a plugin registers, logged as run artifacts."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from activelab import keys
from activelab.config import ModelConfig
from activelab.errors import TrainingError
from activelab.runs import list_checkpoints, read_checkpoint, search_runs

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from activelab.analyzer import AnalyzerResult
    from activelab.dataset import DataBundle
    from activelab.models import Model

RECENT = 5


@dataclass(frozen=True)
class MetricRow:
    task: str
    metric: str
    value: float
    rating: str  # "good" | "moderate" | "poor" | "" (the task declares no threshold)


@dataclass
class Evaluation:
    """One evaluation of one checkpoint."""

    eval_run_id: str
    run_id: str
    checkpoint: str
    when: datetime | None
    figures: dict[str, float] = field(default_factory=dict)
    rows: list[MetricRow] = field(default_factory=list)


def rate(value: float, threshold: tuple[float, float, bool] | None) -> str:
    """'good', 'moderate' or 'poor' by a task's (good, poor, higher_is_better) threshold."""
    if threshold is None or value != value:
        return ""
    good, poor, higher = threshold
    if higher:
        return "good" if value >= good else "poor" if value <= poor else "moderate"
    return "good" if value <= good else "poor" if value >= poor else "moderate"


def rows_of(figures: dict[str, float], config: ModelConfig, host: Any) -> list[MetricRow]:
    """`eval/<task>/<metric>` figures as rated rows (validation losses under 'val')."""
    kinds = {t.name: t.kind for t in config.tasks}

    def thresholds_of(task: str) -> dict[str, Any]:
        if task not in kinds:
            return {}
        try:
            return dict(host.get("tasks", kinds[task]).metric_thresholds)
        except Exception:  # the task's plugin is gone: show the value unrated
            return {}

    rows = []
    for key, value in sorted(figures.items()):
        parts = key.split("/")
        if parts[0] == "eval" and len(parts) == 3:
            task, metric = parts[1], parts[2]
            rating = rate(value, thresholds_of(task).get(metric))
            rows.append(MetricRow(task, metric, value, rating))
        elif parts[0] == "val":
            # a task's metric on the held-out samples is rated like the same metric in training
            threshold = thresholds_of(parts[1]).get(parts[2]) if len(parts) == 3 else None
            rows.append(MetricRow("validation", "/".join(parts[1:]), value, rate(value, threshold)))
    return rows


@dataclass
class CheckpointContext:
    """A checkpoint made ready to use: its config, data, tasks, trainer and weights."""

    config: ModelConfig
    data: DataBundle
    tasks: list[Any]
    trainer: Any
    state: dict[str, Any]
    labels: np.ndarray


def open_checkpoint(
    model: Model, run_id: str, checkpoint: str | None = None, data: DataBundle | None = None
) -> tuple[str, CheckpointContext]:
    """(checkpoint path, its context); the run's last checkpoint when `checkpoint` is None."""
    from activelab.runtime import build_tasks, build_trainer

    lab = model.lab
    run = lab.tracking.get_run(run_id)
    path = checkpoint or run.data.tags.get(keys.LAST_CHECKPOINT)
    if not path:
        raise TrainingError(
            f"Run {run.info.run_name!r} has no checkpoint to evaluate; train it for an epoch."
        )
    if "/" not in path:
        path = f"checkpoints/{path}"
    available = list_checkpoints(lab.tracking, run_id)
    if path not in available:
        names = ", ".join(p.rsplit("/", 1)[-1] for p in available) or "none"
        raise TrainingError(
            f"Run {run.info.run_name!r} has no checkpoint {path.rsplit('/', 1)[-1]!r}; "
            f"its checkpoints: {names}."
        )
    state = read_checkpoint(lab.tracking, run_id, path)
    # The checkpoint's own config: the network it holds, even if the model changed since.
    config = ModelConfig.from_dict(state["config"]) if "config" in state else model.config
    host = lab.plugins
    if data is None:
        data = host.get("datasets", config.dataset)(**config.dataset_params).load()
    tasks = build_tasks(config, host, data.info)
    return path, CheckpointContext(
        config, data, tasks, build_trainer(config, host), state, model.labels.as_array()
    )


def evaluate_run(
    model: Model, run_id: str, checkpoint: str | None = None, data: DataBundle | None = None
) -> Evaluation:
    """Evaluate a checkpoint of `run_id` and log the figures as an eval run under it."""
    from mlflow.entities import Metric

    path, ctx = open_checkpoint(model, run_id, checkpoint, data)
    figures = ctx.trainer.evaluate_state(ctx.data, ctx.tasks, ctx.state, ctx.labels)
    tracking = model.lab.tracking
    source = tracking.get_run(run_id)
    eval_run = tracking.create_run(
        model.id,
        f"eval · {source.info.run_name} · {path.rsplit('/', 1)[-1]}",
        {
            keys.RUN_KIND: "eval",
            keys.EVAL_OF: run_id,
            keys.EVAL_CHECKPOINT: path,
            keys.MLFLOW_PARENT_RUN_ID: run_id,  # nested under the evaluated run in the MLflow UI
            keys.MLFLOW_SOURCE_NAME: "activelab",
        },
    )
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in figures.items() if v == v]
    for start in range(0, len(metrics), 900):
        tracking.log_batch(eval_run.info.run_id, metrics[start : start + 900])
    tracking.end_run(eval_run.info.run_id, "FINISHED")
    return Evaluation(
        eval_run.info.run_id,
        run_id,
        path,
        datetime.fromtimestamp(now / 1000, tz=timezone.utc),
        dict(figures),
        rows_of(figures, ctx.config, model.lab.plugins),
    )


def recent_evaluations(model: Model, run_id: str, limit: int = RECENT) -> list[Evaluation]:
    """The newest evaluations of `run_id`, newest first."""
    runs = search_runs(model.lab.tracking, [model.id], kind="eval", max_results=200)
    found = []
    for run in runs:
        if run.data.tags.get(keys.EVAL_OF) != run_id:
            continue
        figures = dict(run.data.metrics)
        found.append(
            Evaluation(
                run.info.run_id,
                run_id,
                run.data.tags.get(keys.EVAL_CHECKPOINT, ""),
                datetime.fromtimestamp(run.info.start_time / 1000, tz=timezone.utc),
                figures,
                rows_of(figures, model.config, model.lab.plugins),
            )
        )
        if len(found) >= limit:
            break
    return found


def run_analyzer(
    model: Model,
    run_id: str,
    kind: str,
    checkpoint: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> AnalyzerResult:
    """Run a registered analyzer on a checkpoint; its table and picture are logged to the run
    as `analyzers/<kind>.csv`, `.png` and `.html` (readable in the MLflow UI). `progress`
    hears (done, total, what) from analyzers that take a while."""
    from activelab.analyzer import AnalysisInput

    analyzer = model.lab.plugins.get("analyzers", kind)()
    path, ctx = open_checkpoint(model, run_id, checkpoint)
    predictions = ctx.trainer.predictions(ctx.data, ctx.tasks, ctx.state)
    tracking = model.lab.tracking

    def predictions_at(other: str) -> Any:
        if other == path:
            return predictions
        state = read_checkpoint(tracking, run_id, other)
        return ctx.trainer.predictions(ctx.data, ctx.tasks, state)

    inputs = AnalysisInput(
        ctx.data, predictions, ctx.labels, ctx.config, path,
        checkpoints=tuple(list_checkpoints(tracking, run_id)), predictions_at=predictions_at,
        progress=progress or (lambda *_: None),
    )  # fmt: skip
    result = analyzer.analyze(inputs)
    if result.table is not None:
        csv = io.StringIO()
        result.table.to_csv(csv)
        tracking.log_text(run_id, csv.getvalue(), f"analyzers/{kind}.csv")
    if result.image is not None:
        tracking.log_image_file(run_id, result.image, f"analyzers/{kind}.png")
    if result.table is not None or result.image is not None:
        tracking.log_text(run_id, result.html(), f"analyzers/{kind}.html")
    return result
