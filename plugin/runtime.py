"""What a trainer sees while it runs (`TrainingSession`) and what hooks receive (`RunContext`).

The session is the trainer's only channel back to MLflow: metrics, checkpoints, images and
predictions go through the run's outbox (the loop never waits on the server), the final model
is logged with retries; plus the stop request and progress.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from activelab import keys
from activelab.run_note import NOTE_TAG

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import pandas as pd

    from activelab.config import ModelConfig
    from activelab.dataset import DataBundle
    from activelab.outbox import Outbox
    from activelab.plugins import PluginHost
    from activelab.task import Task

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
PREDICTIONS_PATH = "predictions/predictions.parquet"
# the card's accuracy: `eval/<classifier>/unlabeled_accuracy`, its last TREND epochs drawn
UNLABELED = "/unlabeled_accuracy"
TREND = 20


@dataclass
class RunContext:
    """Identifies a training run for lifecycle hooks."""

    model_id: str
    model_name: str
    run_id: str
    run_name: str
    tracking_uri: str
    config: ModelConfig
    epochs: int
    start_epoch: int = 0
    parent_run: str | None = None
    labels_dataset: tuple[str, str] | None = None  # MLflow dataset name and digest of the labels
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    """Where a run stands; sent as the run's `activelab.progress` tag about once a second."""

    epoch: int = 0  # the epoch in progress (lineage numbering)
    step: int = 0  # global step
    run_steps: int = 0  # steps done in this run
    total_steps: int = 0  # steps this run will do
    steps_per_epoch: int = 0
    samples_per_s: float = 0.0
    eta_s: float | None = None
    started: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(
            {
                "epoch": self.epoch,
                "step": self.step,
                "run_steps": self.run_steps,
                "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch,
                "samples_per_s": round(self.samples_per_s, 1),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
                "started": self.started,
            }
        )


def outage_wait_s() -> float:
    """How long the end of a run waits for an unreachable tracking server before leaving the
    rest in the spool ($ACTIVELAB_OUTAGE_WAIT_S, default 15 minutes)."""
    import os

    return float(os.environ.get("ACTIVELAB_OUTAGE_WAIT_S", "900"))


class TrainingSession:
    """The trainer's view of one run: data, labels, tasks, and the ways to report back."""

    def __init__(
        self,
        context: RunContext,
        outbox: Outbox,
        host: PluginHost,
        data: DataBundle,
        labels: np.ndarray,
        tasks: list[Task],
        epochs: int,
        start_epoch: int = 0,
        resume: dict[str, Any] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.context = context
        self.outbox = outbox
        self.host = host
        self.data = data
        self.labels = labels
        self.tasks = tasks
        self.epochs = epochs
        self.start_epoch = start_epoch
        self.resume = resume
        self.on_progress = on_progress
        self.progress = Progress()
        self.outage_wait_s = outage_wait_s()
        self.epochs_done = 0
        self.final_loss: float | None = None  # the last epoch's loss/total
        self.accuracies: list[float] = []  # unlabeled accuracy per epoch, for the card
        self.last_checkpoint: str | None = None
        self.batch_size = 1
        self._last_progress_sent = 0.0
        self._loop_ended_at: float | None = None
        self._step_times: list[float] = []
        self._last_epoch: tuple[dict[str, float], int, int] | None = None  # figures, step, ms
        # work that waits until the run has ended (`follow_ups`): the run's results are out
        # and its waiters go on while the model is exported
        self.follow_ups: list[Callable[[], None]] = []

    @property
    def run_id(self) -> str:
        return self.context.run_id

    @property
    def stop_requested(self) -> bool:
        return self.outbox.stop_requested.is_set()

    def request_stop(self) -> None:
        """Ask the loop to stop at the next step boundary (signal handlers call this)."""
        self.outbox.stop_requested.set()

    # --- progress -----------------------------------------------------------------------------

    def begin(self, steps_per_epoch: int, modules: Any = None, batch_size: int = 1) -> None:
        """Called by the trainer once its model and data are ready."""
        self.progress = Progress(
            epoch=self.start_epoch + 1,
            total_steps=steps_per_epoch * self.epochs,
            steps_per_epoch=steps_per_epoch,
        )
        self.batch_size = batch_size
        self.outbox.set_run_tags({keys.PROGRESS: self.progress.to_json()})
        if modules is not None:
            self._log_text("model_summary.txt", model_summary(modules))

    def total_loss(self, terms: dict[str, Any], epoch: int, step: int) -> Any:
        """The step's total: the sum of the tasks' weighted terms, refused when it is not a
        finite number (naming every term, so the culprit shows). Trainers sum through this."""
        import torch

        total = sum(terms.values())
        if not torch.isfinite(total):
            from activelab.errors import TrainingError

            shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            raise TrainingError(
                f"The total loss became {float(total)} at epoch {epoch}, step {step} ({shown}); "
                "lower the learning rate or the task weights."
            )
        return total

    def step_done(self, epoch: int, step: int) -> None:
        if self.outbox.refused:  # training on with nowhere to keep checkpoints loses work
            from activelab.errors import StorageError

            raise StorageError(self.outbox.refused)
        p = self.progress
        p.epoch, p.step, p.run_steps = epoch, step, p.run_steps + 1
        now = time.time()
        self._loop_ended_at = now
        elapsed = max(now - p.started, 1e-9)
        p.samples_per_s = p.run_steps * self.batch_size / elapsed
        if p.total_steps:
            p.eta_s = elapsed / p.run_steps * max(p.total_steps - p.run_steps, 0)
        if now - self._last_progress_sent >= 1.0:
            self._last_progress_sent = now
            self.outbox.set_run_tags({keys.PROGRESS: p.to_json()})
        if self.on_progress is not None:
            self.on_progress(p)

    # --- reporting ----------------------------------------------------------------------------

    def log_metrics(self, figures: dict[str, float], step: int) -> None:
        """Buffered; sent in batches by a background thread."""
        self.outbox.add(figures, step)

    def end_epoch(self, epoch: int, figures: dict[str, float], step: int) -> None:
        """Epoch figures (logged with step = epoch), the card update and the hook."""
        stamp = int(time.time() * 1000)
        self.outbox.add(figures, epoch, timestamp_ms=stamp)
        self._last_epoch = (dict(figures), epoch, stamp)
        self.outbox.add({"epoch": epoch}, step)
        self.epochs_done += 1
        self._loop_ended_at = time.time()  # an epoch's evaluation is part of the loop
        card = {keys.TOTAL_EPOCHS: str(epoch), keys.UPDATED_AT: str(int(time.time() * 1000))}
        loss = figures.get("epoch/loss/total")
        if loss is not None:
            card[keys.LATEST_LOSS] = f"{loss:.6g}"
            self.final_loss = float(loss)
        accuracy = next(
            (v for k, v in figures.items() if k.startswith("eval/") and k.endswith(UNLABELED)),
            None,
        )
        if accuracy is not None and math.isfinite(accuracy):
            self.accuracies.append(float(accuracy))
            card[keys.LATEST_ACCURACY] = f"{accuracy:.4f}"
            card[keys.ACCURACY_TREND] = ",".join(f"{a:.3f}" for a in self.accuracies[-TREND:])
        self.outbox.set_experiment_tags(card)
        self.outbox.set_run_tags(
            {keys.EPOCHS_TOTAL: str(epoch), keys.PROGRESS: self.progress.to_json()}
        )
        self.host.on_epoch_end(self.context, epoch, dict(figures))

    def save_checkpoint(
        self, state: dict[str, Any], epoch: int, step: int, partial: bool = False
    ) -> str:
        """Log a checkpoint: `checkpoints/epoch-0005.pt`, or `step-0000123.pt` for a stop
        mid-epoch (`partial`). `epoch` counts completed epochs along the lineage."""
        import torch

        name = f"step-{step:07d}.pt" if partial else f"epoch-{epoch:04d}.pt"
        state = {**state, "run_id": self.run_id, "config": self.context.config.to_dict()}
        artifact_path = f"{CHECKPOINT_DIR}/{name}"
        self.outbox.artifact(
            name, CHECKPOINT_DIR, lambda path: torch.save(state, path),
            tags={keys.LAST_CHECKPOINT: artifact_path},
        )  # fmt: skip
        self.last_checkpoint = artifact_path
        self.host.on_checkpoint_saved(self.context, epoch, artifact_path)
        return artifact_path

    def finish(self) -> None:
        """The final progress and the loop's own time (`train_time_s`: from the model being
        ready to the end of its last epoch, each epoch's evaluation included), so what a run
        costs beyond its training (start, final predictions, end) can be told apart."""
        self.outbox.set_run_tags({keys.PROGRESS: self.progress.to_json()})
        if self._loop_ended_at is not None:
            loop = self._loop_ended_at - self.progress.started
            self.outbox.add({"train_time_s": round(loop, 3)}, self.progress.step)

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        """An image series (MLflow UI's image grid, one per step)."""
        self.outbox.image(key, image, step)

    def log_predictions(self, frame: pd.DataFrame) -> None:
        """Per-sample latent, prediction and certainty (the labeling map reads this)."""
        folder, name = PREDICTIONS_PATH.rsplit("/", 1)
        self.outbox.artifact(
            name, folder, frame.to_parquet, tags={keys.PREDICTIONS: PREDICTIONS_PATH}
        )

    def log_model(self, module: Any, example: np.ndarray | None = None) -> None:
        """Log `module` as the run's MLflow model once the run has ended: its predictions and
        checkpoints are out first, and a script's `wait()` does not wait for the export (~3 s).
        `module` takes images (N, C, H, W) as the data set gives them; `example` is a few of
        them (default: the first two). The logged model is a pyfunc that takes images in any
        common form and returns a named table (`activelab.serving`); a module with
        `output_layout()` gets map, latent and class columns. It must not change afterwards."""
        self.follow_ups.append(lambda: self._log_model_now(module, example))

    def _log_model_now(self, module: Any, example: np.ndarray | None) -> None:
        from activelab.connectivity import is_transient
        from activelab.serving import description, log_serving_model, spec_of

        module.eval()
        log.info("logging the model")
        example = self.data.images[:2].copy() if example is None else example
        spec = spec_of(module, self.data, example)
        deadline = time.monotonic() + self.outage_wait_s
        params = {"trainer": self.context.config.trainer, "epochs": str(self.context.epochs)}
        model_id: str | None = None
        while True:
            try:
                # The run has ended: no active run to put the model in, so it is made in the
                # run's experiment first (once: a retry fills the same one).
                if model_id is None:
                    model_id = self.outbox.tracking.create_logged_model(
                        self.run_id, self._logged_model_name(), params=params,
                        tags={NOTE_TAG: self._logged_model_note() + " " + description(spec)},
                    )  # fmt: skip
                logged = log_serving_model(model_id, self.run_id, module, spec, example)
                self._link_to_logged_model(logged.model_id)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if time.monotonic() >= deadline:
                    # The checkpoints hold the weights; a missing logged model is no lost work.
                    log.error("The model was not logged (tracking server unreachable): %s", exc)
                    return
                log.warning("Tracking server unreachable, retrying to log the model: %s", exc)
                time.sleep(5)  # a retry interval

    def _link_to_logged_model(self, model_id: str) -> None:
        """The last epoch's figures become the logged model's metrics, measured with the
        labels it trained on (the MLflow UI's model page: its metrics and "Datasets used").
        Same key, value, step and time as in the run, so the run's history gains no point."""
        from mlflow.entities import Metric

        if self._last_epoch is None:
            return
        figures, step, stamp = self._last_epoch
        name, digest = self.context.labels_dataset or (None, None)
        metrics = [
            Metric(key, float(value), stamp, step, model_id=model_id,
                   dataset_name=name, dataset_digest=digest)
            for key, value in figures.items()
        ]  # fmt: skip
        try:
            self.outbox.tracking.log_batch(self.run_id, metrics)
        except Exception as exc:  # the figures are in the run; only the model's copy is missing
            log.warning("The logged model's metrics were not recorded: %s", exc)

    def _logged_model_name(self) -> str:
        """The model's own name, as far as MLflow allows one for a logged model."""
        name = re.sub(r"[/:.%\"']", "-", self.context.model_name).strip(" -")
        return name[:200] or "model"

    def _logged_model_note(self) -> str:
        """The logged model's description in the MLflow UI."""
        return (
            f"The trained network of the activelab model **{self.context.model_name}**, from "
            f"run `{self.context.run_name}` ({self.epochs_done} epoch(s) in this run; its "
            "checkpoints continue the training)."
        )

    def _log_text(self, name: str, text: str) -> None:
        folder, _, file_name = name.rpartition("/")
        self.outbox.artifact(
            file_name, folder, lambda path: path.write_text(text, encoding="utf-8")
        )


def build_tasks(config: ModelConfig, host: PluginHost, info: Any = None) -> list[Task]:
    """Instances of the config's enabled tasks (checked against the data when `info` given)."""
    tasks = []
    for spec in config.tasks:
        if not spec.enabled:
            continue
        task = host.get("tasks", spec.kind)(
            name=spec.name,
            weight=spec.weight,
            enabled=True,
            latent_slice=spec.latent_slice,
            **spec.params,
        )
        if info is not None:
            task.check_data(info)
        tasks.append(task)
    return tasks


def build_trainer(config: ModelConfig, host: PluginHost) -> Any:
    return host.get("trainers", config.trainer)(**config.trainer_params)


def model_summary(modules: Any) -> str:
    """Layers, shapes and parameter counts of a torch module, as text."""
    lines = [f"{'layer':48s} {'shape':24s} {'parameters':>12s}"]
    total = 0
    for name, parameter in modules.named_parameters():
        count = parameter.numel()
        total += count
        lines.append(f"{name:48s} {tuple(parameter.shape)!s:24s} {count:12,d}")
    lines.append(f"{'total':48s} {'':24s} {total:12,d}")
    return "\n".join(lines) + "\n"


def load_checkpoint_bytes(data: bytes) -> dict[str, Any]:
    """A checkpoint's contents. Files read from a store are untrusted: torch's weights-only
    loader takes tensors and plain values and refuses anything that would run code."""
    import pickle

    import torch

    from activelab.errors import TrainingError

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "allowed global" not in str(exc) and "Unsupported global" not in str(exc):
            # not an object torch refused to build: the bytes are no checkpoint at all
            raise TrainingError(
                "The checkpoint could not be read (the file is damaged or not a checkpoint). "
                "Continue from another checkpoint or start afresh."
            ) from None
        raise TrainingError(
            "The checkpoint holds objects other than tensors and plain values, so it was not "
            "loaded (loading it could run code). Continue from another checkpoint or start "
            "afresh."
        ) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise TrainingError(
            f"The checkpoint could not be read ({type(exc).__name__}: the file is damaged or "
            "not a checkpoint). Continue from another checkpoint or start afresh."
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise TrainingError(
            "The file is not an activelab checkpoint (no model weights in it); continue from "
            "another checkpoint or start afresh."
        )
    return state
