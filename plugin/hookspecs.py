"""The hooks activelab plugins implement.

Registration hooks receive a `register` callback, so activelab owns naming and duplicates.
Lifecycle hooks are the training event bus: any plugin can subscribe to them.
Plugin authors mark their functions with `activelab.hookimpl`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from activelab.runtime import RunContext

PROJECT = "activelab"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration ---------------------------------------------------------------------------


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Register Task subclasses (loss terms): call `register(TaskClass)` for each.

    :param register: takes a subclass of `activelab.Task` with a unique `kind`.
    """


@hookspec
def register_trainers(register: Callable[[type], None]) -> None:
    """Register Trainer subclasses: call `register(TrainerClass)` for each.

    :param register: takes a subclass of `activelab.Trainer` with a unique `kind`.
    """


@hookspec
def register_datasets(register: Callable[[type], None]) -> None:
    """Register Dataset subclasses: call `register(DatasetClass)` for each.

    :param register: takes a subclass of `activelab.Dataset` with a unique `kind`.
    """


@hookspec
def register_strategies(register: Callable[[type], None]) -> None:
    """Register query strategies that pick the next samples to label.

    :param register: takes a subclass of `activelab.QueryStrategy` with a unique `kind`
        (implement `scores` to rank by the classifier, or override `select`, which also
        gets every sample's latent, to pick by where samples lie).
    """


@hookspec
def register_analyzers(register: Callable[[type], None]) -> None:
    """Register analyzers the Evaluate page can run on a checkpoint (confusion matrix, ...).

    :param register: takes a subclass of `activelab.Analyzer` with a unique `kind`.
    """


@hookspec
def register_backends(register: Callable[[type], None]) -> None:
    """Register launcher backends: where a run's worker runs (a Kubernetes job, a Slurm batch).

    :param register: takes a subclass of `activelab.Backend` with a unique `kind`; its
        `start(spec, tracking)` runs `python -m activelab.worker -` with the spec's JSON in
        `$ACTIVELAB_LAUNCH_SPEC` wherever it runs.
    """


# --- lifecycle: the training event bus ------------------------------------------------------


@hookspec
def on_train_start(run: RunContext) -> None:
    """A training run has started; `run` names the model, run id and config.

    :param run: the run's context (model, run id, config, tracking URI).
    """


@hookspec
def on_epoch_end(run: RunContext, epoch: int, metrics: dict[str, float]) -> None:
    """An epoch has ended.

    :param run: the run's context.
    :param epoch: the epoch number along the run's lineage (1-based).
    :param metrics: the epoch's figures (`epoch/loss/total`, `val/...`, `eval/...`).
    """


@hookspec
def on_checkpoint_saved(run: RunContext, epoch: int, artifact_path: str) -> None:
    """A checkpoint has been logged to the run.

    :param run: the run's context.
    :param epoch: the epoch the checkpoint holds.
    :param artifact_path: where the checkpoint lies among the run's artifacts.
    """


@hookspec
def on_train_end(run: RunContext, status: str, error: BaseException | None) -> None:
    """A training run has ended.

    :param run: the run's context.
    :param status: MLflow's final status: FINISHED, KILLED or FAILED.
    :param error: the exception that ended a FAILED run, else None.
    """


@hookspec
def on_labels_changed(model_id: str, change: dict[str, Any]) -> None:
    """Labels of a model changed in this process.

    :param model_id: the model's experiment id.
    :param change: the change event: `kind`, `changes` ({index: [old, new]}), `id`, `author`.
    """
