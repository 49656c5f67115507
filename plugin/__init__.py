"""activelab: interactive semi-supervised and active-learning models, tracked in MLflow.

A model is an MLflow experiment that owns its labels, training runs and checkpoints::

    import activelab

    model = activelab.create_model("digits-demo")          # preset "default", data set digits
    model.set_label(0, "0")                                 # durable when it returns
    run = activelab.launch(model, epochs=5, wait=True)      # a run in the model's experiment
    activelab.list_models()                                 # cards: labels, epochs, latest loss

The functions here use a default `Lab` over `MLFLOW_TRACKING_URI`, or the embedded store
under `$ACTIVELAB_HOME` (default `~/.activelab`); `activelab.configure(...)` changes it.
Plugin authors import `hookimpl`, `Task`, `Trainer`, `Dataset`, `QueryStrategy`,
`Analyzer` and `Backend`.

Where things live, layer by layer from the store up:

- store: `tracking` (every MLflow call), `settings` (which store, which data folder),
  `keys` (every tag and param name), `errors` (what a person reads).
- models: `models` (Lab, Model, ModelCard), `labels` (the label log), `config` and
  `presets` (what a model trains), `runs` (reading runs, stop requests, dead trainers).
- plugins: `hookspecs`, `plugins` (the one pluggy manager), `component` (declared params),
  the interfaces `task`, `trainer`, `dataset`, `strategy`, `analyzer`, `backend`, and
  `task_files` / `task_watcher` (hot-reloaded `.py` files). Built-ins: `activelab.tasks`.
- training: `launcher` (launch, TrainingHandle), `backend` (where a worker runs),
  `standby` (the warm worker that forks workers), `worker` (one run to its end),
  `runtime` (TrainingSession, RunContext), `outbox` (what a run sends, through outages),
  `evaluation` (checkpoints evaluated and analyzed).
- people: `cli` (the `activelab` command) and `activelab.panel_app` (the app: `shell`,
  one `pages/` view and one `vm/` view-model per page).
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from activelab.hookspecs import hookimpl
from activelab.version import __version__

if TYPE_CHECKING:  # every lazy name below, visible to type checkers and editors
    import os
    from collections.abc import Callable, Sequence

    from activelab.analyzer import AnalysisInput, Analyzer, AnalyzerResult
    from activelab.backend import Backend
    from activelab.config import ModelConfig, TaskSpec
    from activelab.dataset import DataBundle, Dataset, DatasetInfo
    from activelab.errors import ActivelabError
    from activelab.labels import LabelStore
    from activelab.launcher import TrainingHandle
    from activelab.models import Lab, Model, ModelCard
    from activelab.plugins import get_plugins
    from activelab.runtime import Progress, RunContext
    from activelab.strategy import QueryStrategy
    from activelab.task import Batch, Outputs, Task
    from activelab.trainer import Trainer

# Heavy parts load on first use, so `import activelab` stays fast for plugin files and the CLI.
_LAZY = {
    "Lab": "activelab.models",
    "Model": "activelab.models",
    "ModelCard": "activelab.models",
    "ModelConfig": "activelab.config",
    "TaskSpec": "activelab.config",
    "LabelStore": "activelab.labels",
    "Task": "activelab.task",
    "Batch": "activelab.task",
    "Outputs": "activelab.task",
    "Trainer": "activelab.trainer",
    "Dataset": "activelab.dataset",
    "DatasetInfo": "activelab.dataset",
    "DataBundle": "activelab.dataset",
    "QueryStrategy": "activelab.strategy",
    "Analyzer": "activelab.analyzer",
    "AnalysisInput": "activelab.analyzer",
    "AnalyzerResult": "activelab.analyzer",
    "Backend": "activelab.backend",
    "TrainingHandle": "activelab.launcher",
    "RunContext": "activelab.runtime",
    "Progress": "activelab.runtime",
    "ActivelabError": "activelab.errors",
    "get_plugins": "activelab.plugins",
}

__all__ = [  # spelled out, so type checkers and linters read it
    "ActivelabError",
    "AnalysisInput",
    "Analyzer",
    "AnalyzerResult",
    "Backend",
    "Batch",
    "DataBundle",
    "Dataset",
    "DatasetInfo",
    "Lab",
    "LabelStore",
    "Model",
    "ModelCard",
    "ModelConfig",
    "Outputs",
    "Progress",
    "QueryStrategy",
    "RunContext",
    "Task",
    "TaskSpec",
    "Trainer",
    "TrainingHandle",
    "__version__",
    "configure",
    "create_model",
    "default_lab",
    "delete_model",
    "get_model",
    "get_plugins",
    "hookimpl",
    "launch",
    "list_models",
    "restore_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'activelab' has no attribute {name!r}")


_default: Lab | None = None
_default_lock = threading.Lock()


def configure(
    tracking_uri: str | None = None,
    home: str | os.PathLike | None = None,
    tasks_dirs: Sequence[str | os.PathLike[str]] | None = None,
) -> Lab:
    """Point the module-level functions at a tracking store (and data directory)."""
    from activelab.models import Lab

    global _default
    with _default_lock:
        _default = Lab(tracking_uri=tracking_uri, home=home, tasks_dirs=tasks_dirs)
        return _default


def default_lab() -> Lab:
    """The Lab the module-level functions use (a documented singleton)."""
    from activelab.models import Lab

    global _default
    with _default_lock:
        if _default is None:
            _default = Lab()
        return _default


def create_model(
    name: str | None = None,
    *,
    preset: str | None = None,
    dataset: str | None = None,
    description: str | None = None,
    config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> Model:
    """Create a model from a preset (default "default") on a data set (default "digits"), with
    dotted `config` overrides and `tags`; see `Lab.create_model`."""
    chosen = {k: v for k, v in (("preset", preset), ("dataset", dataset)) if v is not None}
    return default_lab().create_model(
        name, description=description, config=config, tags=tags, **chosen
    )


def list_models(
    *,
    name_contains: str | None = None,
    dataset: str | None = None,
    tags: dict[str, str] | None = None,
    deleted: bool = False,
    sort: str = "created",
) -> list[ModelCard]:
    """Model cards in one search; `sort`: "created" (newest first), "updated" or "name"."""
    return default_lab().list_models(
        name_contains=name_contains, dataset=dataset, tags=tags, deleted=deleted, sort=sort
    )


def get_model(name_or_id: str, deleted: bool = False) -> Model:
    """A model by name or id."""
    return default_lab().get_model(name_or_id, deleted=deleted)


def delete_model(name_or_id: str) -> Model:
    """Soft-delete a model (its name becomes free; `restore_model` undoes it)."""
    return default_lab().delete_model(name_or_id)


def restore_model(name_or_id: str, name: str | None = None) -> Model:
    """Restore a deleted model, under its old name or `name`."""
    return default_lab().restore_model(name_or_id, name)


def launch(
    model: Model | str,
    *,
    epochs: int | None = None,
    resume_from: str | None = None,
    config: dict[str, Any] | None = None,
    run_name: str | None = None,
    wait: bool = False,
    progress: bool = False,
    in_process: bool = False,
    system_metrics: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    backend: str | None = None,
    address: str | None = None,
    cpus: float | None = None,
    gpus: float | None = None,
    backend_options: dict[str, Any] | None = None,
) -> TrainingHandle:
    """Start training `model` (a Model, or its name or id); the arguments are those of
    `activelab.launcher.launch` (backend: "local" unless given)."""
    from activelab.launcher import launch as _launch

    if isinstance(model, str):
        model = get_model(model)
    chosen = {"backend": backend} if backend is not None else {}
    return _launch(
        model, epochs=epochs, resume_from=resume_from, config=config, run_name=run_name,
        wait=wait, progress=progress, in_process=in_process, system_metrics=system_metrics,
        on_progress=on_progress, address=address, cpus=cpus, gpus=gpus,
        backend_options=backend_options, **chosen,
    )  # fmt: skip
