"""Models: MLflow experiments that own their labels, runs and checkpoints.

`Lab` is the entry point for one tracking store; `Model` is one model in it; `ModelCard` is
the summary a list or the home page shows, read from experiment tags in one search.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from activelab import keys
from activelab.card_updates import CARD_UPDATES
from activelab.config import (
    DEFAULT_DATASET,
    ModelConfig,
    add_task,
    apply_overrides,
    config_from_preset,
    dataset_params_for,
    remove_task,
    validate_config,
)
from activelab.connectivity import explain_refusal
from activelab.dataset import DatasetInfo
from activelab.errors import (
    DatasetUnavailableError,
    InvalidConfigError,
    ModelDeletedError,
    ModelExistsError,
    ModelNotFoundError,
    RunNotFoundError,
)
from activelab.labels import LabelStore
from activelab.presets import DEFAULT_PRESET, get_preset
from activelab.registry import RegisteredVersion, registered_of
from activelab.settings import Settings
from activelab.version import __version__

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    import pandas as pd
    from mlflow.entities import Experiment

    from activelab.analyzer import AnalyzerResult
    from activelab.dataset import DataBundle
    from activelab.evaluation import Evaluation
    from activelab.label_csv import SampleFiles
    from activelab.label_folders import FolderExport
    from activelab.labels import LabelEvent, LabelState
    from activelab.launcher import TrainingHandle
    from activelab.plugins import PluginHost
    from activelab.runs import RunSummary
    from activelab.tracking import Tracking

NOTE_TAG = keys.NOTE_TAG  # MLflow shows it as the experiment's description
AUTO_NAME_RE = re.compile(r"^model-(\d+)$")
MAX_NAME = 200
RESERVED_TAG_PREFIXES = ("mlflow.", keys.PREFIX)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms_to_datetime(ms: int | str | None) -> datetime | None:
    if ms in (None, ""):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def check_model_name(name: str) -> str:
    """The name, if usable; else InvalidConfigError saying why."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidConfigError("A model name cannot be empty.")
    if name != name.strip():
        raise InvalidConfigError(f"Model name {name!r} starts or ends with spaces; remove them.")
    if not name.isprintable():
        raise InvalidConfigError(
            f"Model name {name!r} holds a control character (a line break, tab or NUL); "
            "use letters, digits, spaces and punctuation."
        )
    if len(name) > MAX_NAME:
        raise InvalidConfigError(f"A model name can be at most {MAX_NAME} characters.")
    if name.isdigit():
        raise InvalidConfigError(
            f"Model name {name!r} is all digits, which would read as a model id; add a letter."
        )
    if "[deleted " in name:
        raise InvalidConfigError(
            "'[deleted ...]' is reserved for deleted models; pick another name."
        )
    return name


def user_tags(tags: dict[str, str]) -> dict[str, str]:
    """The tags a person set (not MLflow's, not activelab's)."""
    return {k: v for k, v in tags.items() if not k.startswith(RESERVED_TAG_PREFIXES)}


@dataclass(frozen=True)
class ModelCard:
    """What a model list shows, read from one experiment's tags."""

    id: str
    name: str
    description: str
    dataset: str
    preset: str
    labeled_count: int
    total_epochs: int
    latest_loss: float | None
    created: datetime
    updated: datetime
    latest_run: str | None
    latest_run_status: str | None
    deleted: bool
    tags: dict[str, str] = field(default_factory=dict)
    latest_accuracy: float | None = None  # on the samples nobody labeled, last epoch
    accuracy_trend: list[float] = field(default_factory=list)  # its last epochs
    registered: RegisteredVersion | None = None  # its last version in MLflow's Model Registry
    samples: int | None = None  # the data set's size
    source: str = ""  # where the samples come from, when the data set says (an image folder)

    @classmethod
    def from_experiment(cls, exp: Experiment, tags: dict[str, str] | None = None) -> ModelCard:
        tags = exp.tags if tags is None else tags
        created = _ms_to_datetime(exp.creation_time) or datetime.now(timezone.utc)
        updated = _ms_to_datetime(tags.get(keys.UPDATED_AT)) or created
        deleted = exp.lifecycle_stage == "deleted"
        return cls(
            id=exp.experiment_id,
            name=tags.get(keys.DELETED_NAME, exp.name) if deleted else exp.name,
            description=tags.get(NOTE_TAG, ""),
            dataset=tags.get(keys.DATASET, ""),
            preset=tags.get(keys.PRESET, ""),
            labeled_count=int(tags.get(keys.LABELED_COUNT, 0) or 0),
            total_epochs=int(tags.get(keys.TOTAL_EPOCHS, 0) or 0),
            latest_loss=_float_or_none(tags.get(keys.LATEST_LOSS)),
            created=created,
            updated=updated,
            latest_run=tags.get(keys.LATEST_RUN) or None,
            latest_run_status=tags.get(keys.LATEST_RUN_STATUS) or None,
            deleted=deleted,
            tags=user_tags(tags),
            latest_accuracy=_float_or_none(tags.get(keys.LATEST_ACCURACY)),
            accuracy_trend=[  # a tag anyone can edit: what does not parse is left out
                a
                for v in (tags.get(keys.ACCURACY_TREND) or "").split(",")
                if (a := _float_or_none(v)) is not None
            ],
            registered=registered_of(tags),
            samples=_dataset_size(tags),
            source=_dataset_source(tags),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "preset": self.preset,
            "labeled_count": self.labeled_count,
            "total_epochs": self.total_epochs,
            "latest_loss": self.latest_loss,
            "created": self.created.isoformat(timespec="seconds"),
            "updated": self.updated.isoformat(timespec="seconds"),
            "latest_run": self.latest_run,
            "latest_run_status": self.latest_run_status,
            "deleted": self.deleted,
            "tags": self.tags,
            "latest_accuracy": self.latest_accuracy,
            "accuracy_trend": self.accuracy_trend,
            "registered": json.loads(self.registered.to_json()) if self.registered else None,
            "samples": self.samples,
            "source": self.source,
        }


def _dataset_size(tags: dict[str, str]) -> int | None:
    """The data set's size from the model's tag (None when absent or edited into nonsense)."""
    try:
        size = json.loads(tags.get(keys.DATASET_INFO) or "{}").get("size")
    except (ValueError, AttributeError):
        return None
    return size if isinstance(size, int) else None


def _dataset_source(tags: dict[str, str]) -> str:
    """The data set's folder, for data sets read from one (`dataset.path`)."""
    try:
        params = json.loads(tags.get(keys.CONFIG) or "{}").get("dataset_params", {})
    except (ValueError, AttributeError):
        return ""
    path = params.get("path") if isinstance(params, dict) else None
    return path if isinstance(path, str) else ""


class Model:
    """One activelab model. Get one with `Lab.get_model` or `Lab.create_model`."""

    def __init__(self, lab: Lab, experiment: Experiment) -> None:
        self.lab = lab
        self._experiment = experiment
        self._tags = dict(experiment.tags)  # kept in step with our own tag writes
        self._labels: LabelStore | None = None
        self._lock = threading.Lock()
        # True where a person waits on each label (the app): the card's figures are written
        # in the background (activelab.card_updates), not before the key press returns
        self.deferred_card = False

    def __repr__(self) -> str:
        return f"<activelab.Model {self.name!r} id={self.id}>"

    # --- identity and card -------------------------------------------------------------------

    @property
    def experiment(self) -> Experiment:
        return self._experiment

    @property
    def id(self) -> str:
        return self._experiment.experiment_id

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def description(self) -> str:
        return self._tags.get(NOTE_TAG, "")

    @property
    def card(self) -> ModelCard:
        return ModelCard.from_experiment(self._experiment, self._tags)

    @property
    def deleted(self) -> bool:
        return self._experiment.lifecycle_stage == "deleted"

    @property
    def tags(self) -> dict[str, str]:
        return user_tags(self._tags)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_json(self._tags[keys.CONFIG])

    @property
    def dataset_info(self) -> DatasetInfo:
        return DatasetInfo.from_json(self._tags[keys.DATASET_INFO])

    def refresh(self) -> Model:
        """Re-read the experiment (tags, name, lifecycle) from MLflow."""
        exp = self.lab.tracking.get_experiment(self.id)
        if exp is None:
            raise ModelNotFoundError(
                f"Model {self.id} no longer exists in {self.lab.tracking.uri}."
            )
        self._set_experiment(exp)
        return self

    def _set_experiment(self, exp: Experiment) -> None:
        self._experiment = exp
        self._tags = dict(exp.tags)

    def _set_tags(self, tags: dict[str, str]) -> None:
        self.lab.tracking.set_experiment_tags(self.id, tags)
        self._tags.update(tags)  # keep the cached card in step without a round trip

    def touch(self, extra: dict[str, str] | None = None) -> None:
        """Mark the model as changed now (the card's "last modified")."""
        self._set_tags({**(extra or {}), keys.UPDATED_AT: str(_now_ms())})

    # --- editing -----------------------------------------------------------------------------

    def rename(self, new_name: str) -> Model:
        self._require_active("rename")
        check_model_name(new_name)
        if new_name == self._experiment.name:
            return self
        self.lab.tracking.rename_experiment(self.id, new_name)
        self.touch()
        return self.refresh()

    def set_description(self, text: str) -> None:
        self.touch({NOTE_TAG: text})

    def set_tags(self, tags: dict[str, str]) -> None:
        """Add or change user tags (shown on cards, filterable in `list_models`)."""
        for key in tags:
            if not key or key.startswith(RESERVED_TAG_PREFIXES):
                raise InvalidConfigError(
                    f"Tag {key!r} is reserved (mlflow.* and activelab.* belong to the tools)."
                )
        self.touch({k: str(v) for k, v in tags.items()})

    def remove_tag(self, key: str) -> None:
        if key not in self.tags:
            raise InvalidConfigError(f"Model {self.name!r} has no tag {key!r}.")
        self.lab.tracking.delete_experiment_tag(self.id, key)
        self.touch()
        self.refresh()

    def update_config(self, overrides: dict[str, Any]) -> ModelConfig:
        """Apply dotted overrides (e.g. {"lr": 1e-4, "tasks.kl.weight": 0.5}) and save them."""
        return self._save_config(apply_overrides(self.config, overrides, self.lab.plugins))

    def add_task(self, kind: str, **options: Any) -> ModelConfig:
        """Add a task of a registered class.

        Options: name, weight, enabled, latent_slice, params.
        """
        return self._save_config(add_task(self.config, kind, self.lab.plugins, **options))

    def remove_task(self, name: str) -> ModelConfig:
        return self._save_config(remove_task(self.config, name))

    def _save_config(self, config: ModelConfig) -> ModelConfig:
        self._require_active("change the config of")
        validate_config(config, self.lab.plugins, self.dataset_info)
        self.touch({keys.CONFIG: config.to_json()})
        return config

    def delete(self) -> None:
        """Soft delete: the model leaves the list and its name is free; `restore` undoes it."""
        self._require_active("delete")
        name = self._experiment.name
        self._set_tags({keys.DELETED_NAME: name})
        self.lab.tracking.rename_experiment(self.id, f"{name} [deleted {self.id}]")
        self.lab.tracking.delete_experiment(self.id)
        self.refresh()

    def restore(self, name: str | None = None) -> Model:
        """Bring a deleted model back, under its old name or `name`."""
        if not self.deleted:
            raise InvalidConfigError(f"Model {self.name!r} is not deleted.")
        target = check_model_name(name or self._tags.get(keys.DELETED_NAME, self.name))
        if self.lab.tracking.get_experiment_by_name(target) is not None:
            raise ModelExistsError(
                f"A model named {target!r} exists now; restore this one under another name "
                f"(activelab models restore {self.id} --as NEW_NAME)."
            )
        self.lab.tracking.restore_experiment(self.id)
        self.lab.tracking.rename_experiment(self.id, target)
        self.lab.tracking.delete_experiment_tag(self.id, keys.DELETED_NAME)
        self.touch()
        return self.refresh()

    def _check_not_deleted(self) -> None:
        """Before a label change is written: the model may have been deleted since this
        process opened it (by another process, the app or the CLI)."""
        exp = self.lab.tracking.get_experiment(self.id)
        if exp is not None and exp.lifecycle_stage != "deleted":
            return
        name = (exp.tags.get(keys.DELETED_NAME) if exp is not None else None) or self.name
        when = ""
        if exp is not None and exp.last_update_time:
            stamp = datetime.fromtimestamp(exp.last_update_time / 1000, timezone.utc)
            when = f" at {stamp:%Y-%m-%d %H:%M:%S} UTC"
        raise ModelDeletedError(
            f"Model {name!r} was deleted{when}; nothing was written. Restore it "
            f"(`activelab models restore {self.id}`, or Restore in the app) and label again."
        )

    def _require_active(self, verb: str) -> None:
        if self.deleted:
            raise InvalidConfigError(
                f"Model {self.name!r} is deleted; restore it before you {verb} it."
            )

    # --- labels ------------------------------------------------------------------------------

    @property
    def labels(self) -> LabelStore:
        """The model's live labels (see `activelab.labels.LabelStore`)."""
        with self._lock:
            if self._labels is None:
                folder = self.lab.tracking.folder(self._experiment)
                self._labels = LabelStore(
                    folder, self.dataset_info, on_change=self._labels_changed,
                    before_write=self._check_not_deleted,
                )  # fmt: skip
            return self._labels

    def _labels_changed(self, event: LabelEvent | None, state: LabelState) -> None:
        """Keep the card's count in step; `event` is None for changes read from elsewhere."""
        count = str(len(state.labels))
        if event is not None:
            if self.deferred_card:
                CARD_UPDATES.submit(self, {keys.LABELED_COUNT: count})
            else:
                self.touch({keys.LABELED_COUNT: count})
            self.lab.plugins.on_labels_changed(self.id, event.to_dict())
        elif self._tags.get(keys.LABELED_COUNT) != count:
            # Concurrent writers can leave a stale count behind; whoever reads fixes it.
            self._set_tags({keys.LABELED_COUNT: count})

    def set_label(self, index: int, label: Any) -> LabelEvent | None:
        return self.labels.set(index, label)

    def set_labels(self, labels: Any, label: Any = None) -> LabelEvent | None:
        return self.labels.set_many(labels, label)

    def clear_label(self, index: int) -> LabelEvent | None:
        return self.labels.clear(index)

    # --- training and runs ---------------------------------------------------------------------

    def launch(self, **options: Any) -> TrainingHandle:
        """Start a training run; see `activelab.launcher.launch` for the options."""
        from activelab.launcher import launch

        with explain_refusal(f"train the model {self.name!r}", "EDIT"):
            return launch(self, **options)

    def default_epochs(self, resuming: bool = False) -> int:
        """Epochs a launch trains when it names none (the trainer's choice for this data)."""
        cfg = self.config
        trainer = self.lab.plugins.get("trainers", cfg.trainer)(**cfg.trainer_params)
        return trainer.default_epochs(self.dataset_info, resuming)

    def runs(self, limit: int = 100, kind: str | None = "train") -> list[RunSummary]:
        """This model's runs, newest first (dead trainers are marked FAILED on the way)."""
        from activelab.runs import RunSummary, reap_dead_runs, search_runs

        found = search_runs(self.lab.tracking, [self.id], kind=kind, max_results=limit)
        reaped = reap_dead_runs(self.lab.tracking, found)
        if reaped:
            found = search_runs(self.lab.tracking, [self.id], kind=kind, max_results=limit)
        return [RunSummary.from_run(r) for r in found]

    def checkpoints(self, run_id: str) -> list[str]:
        """Artifact paths of a run's checkpoints, oldest first ([] before its first one)."""
        from activelab.runs import get_run, list_checkpoints

        if get_run(self.lab.tracking, run_id).info.experiment_id != self.id:
            raise RunNotFoundError(f"Run {run_id} belongs to another model.")
        return list_checkpoints(self.lab.tracking, run_id)

    def export_checkpoint(self, path: str | os.PathLike, run: str | None = None) -> Path:
        """Copy a checkpoint to `path`: `run` is "RUN_ID" (its latest checkpoint) or
        "RUN_ID:epoch-0005.pt"; default: the latest checkpoint of the latest run."""
        from activelab.runs import download_checkpoint

        run_id, checkpoint = self._checkpoint_ref(run)
        return download_checkpoint(self.lab.tracking, run_id, checkpoint, Path(path))

    def _checkpoint_ref(self, run: str | None) -> tuple[str, str]:
        """(run id, checkpoint) of "RUN_ID", "RUN_ID:epoch-0005.pt" or, by default, the
        latest checkpoint of the latest run."""
        from activelab.runs import resolve_checkpoint

        ref = run or self.refresh()._tags.get(keys.LATEST_RUN)
        if not ref:
            raise RunNotFoundError(f"Model {self.name!r} has no training run yet; train it first.")
        return resolve_checkpoint(self.lab.tracking, ref, self.id)

    def evaluate(self, run: str | None = None) -> Evaluation:
        """Evaluate a checkpoint (`run` as in `export_checkpoint`) and log the figures as an
        eval run nested under its run; each figure is rated by its task's thresholds."""
        from activelab.evaluation import evaluate_run

        run_id, checkpoint = self._checkpoint_ref(run)
        return evaluate_run(self, run_id, checkpoint)

    def analyze(self, kind: str, run: str | None = None, progress: Any = None) -> AnalyzerResult:
        """Run a registered analyzer (e.g. "confusion_matrix", "latent_over_checkpoints") on a
        checkpoint; its table and picture are logged to the run under `analyzers/`.
        `progress(done, total, what)` hears from analyzers that take a while."""
        from activelab.evaluation import run_analyzer

        self.lab.plugins.get("analyzers", kind)  # an unknown kind fails before any download
        run_id, checkpoint = self._checkpoint_ref(run)
        return run_analyzer(self, run_id, kind, checkpoint, progress=progress)

    def register(self, run: str | None = None, alias: str | None = None) -> RegisteredVersion:
        """Put `run`'s logged model (default: the latest training run's) into MLflow's Model
        Registry as a new version of the registered model of this model's name, and point
        `alias` (e.g. "champion") at it: `mlflow.pyfunc.load_model("models:/NAME@champion")`
        and `mlflow models serve -m models:/NAME@champion` reach it."""
        from activelab.registry import register

        return register(self, run, alias)

    def predictions(self, run: str | None = None) -> pd.DataFrame:
        """Per-sample predictions of `run` (default: the latest run that logged them), one
        row per sample: the map (`z0`, `z1`), the latent (`h0..`), `predicted` (class name),
        `certainty`, `p0..` and, where the data set has it, `true_label`."""
        frame = self._predictions_frame(run)[1].copy()
        classes = np.asarray(self.dataset_info.classes, dtype=object)
        for column in ("predicted", "true_label"):
            if column in frame:
                codes = frame[column].to_numpy()
                frame[column] = np.where(codes >= 0, classes[np.clip(codes, 0, None)], None)
        return frame

    def _latest_or_untrained(self) -> pd.DataFrame:
        """The latest run's predictions; before any run, the untrained model's placement
        (a cold start: typical samples of its clusters are what to label first)."""
        from activelab.runs import latest_predictions_run

        if latest_predictions_run(self.lab.tracking, self.id) is not None:
            return self._predictions_frame(None)[1]
        return self.untrained_predictions()

    def untrained_predictions(self, data: DataBundle | None = None) -> pd.DataFrame:
        """Where the untrained model places each sample (no classes: they would mean
        nothing); `data` when already loaded."""
        from activelab.runtime import build_tasks, build_trainer

        config = self.config
        host = self.lab.plugins
        if data is None:
            data = host.get("datasets", config.dataset)(**config.dataset_params).load()
        trainer = build_trainer(config, host)
        frame: pd.DataFrame = trainer.predictions(data, build_tasks(config, host, data.info))
        return frame

    def _predictions_frame(self, run: str | None) -> tuple[str, pd.DataFrame]:
        from activelab.runs import get_run, latest_predictions_run, read_predictions

        run_id = run or latest_predictions_run(self.lab.tracking, self.id)
        if run_id is None:
            raise RunNotFoundError(
                f"Model {self.name!r} has no run with predictions yet; train it for an epoch."
            )
        frame = read_predictions(self.lab.tracking, run_id)
        if frame is None:
            status = get_run(self.lab.tracking, run_id).info.status
            raise RunNotFoundError(
                f"Run {run_id} ({status}) logged no predictions; leave `run` out to use the "
                "latest run that did."
            )
        return run_id, frame

    def next_to_label(
        self,
        count: int = 10,
        strategy: str = "auto",
        run: str | None = None,
        candidates: Any = None,
        seed: int | None = None,
    ) -> list[int]:
        """The `count` unlabeled samples a query strategy picks, best first, from the
        predictions of `run` (default: the latest run that logged them).

        candidates: only pick among these sample indices (or a boolean mask), e.g. a pool.
        seed: makes strategies with a random part (random, ties) repeatable.
        """
        from activelab.runs import features_of, probabilities_of

        chooser = self.lab.plugins.get("strategies", strategy)()  # unknown: a clear error
        if isinstance(count, bool) or int(count) != count or count < 1:
            raise InvalidConfigError(f"count must be a whole number of at least 1, not {count}.")
        frame = self._predictions_frame(run)[1] if run else self._latest_or_untrained()
        labels = self.labels
        labels.refresh()
        options: dict[str, Any] = {"seed": seed, "latent": features_of(frame)}
        if candidates is not None:
            from activelab.strategy import candidate_mask

            options["candidates"] = candidate_mask(candidates, len(frame))
        picked = chooser.select(
            probabilities_of(frame, len(labels.info.classes)),
            labels.as_array() >= 0,
            int(count),
            **options,
        )
        return [int(i) for i in picked]

    def sample_files(self) -> SampleFiles | None:
        """Which file each sample is (relative to the data set's folder), for a model whose
        samples are files (an image folder); None for the others, or when the folder no
        longer matches the model (files added or removed: the indices would be wrong)."""
        config = self.config
        dataset = self.lab.plugins.get("datasets", config.dataset)(**config.dataset_params)
        try:
            files = dataset.sample_files()
        except DatasetUnavailableError:
            return None
        if files is None or len(files.files) != self.dataset_info.size:
            return None
        return cast("SampleFiles", files)

    def labels_csv(self) -> str:
        """The labels as CSV: `sample_index,path,label` for a model of files, else
        `sample_index,label`."""
        return self.labels.to_csv(self.sample_files())

    def export_labels(self, path: str | os.PathLike) -> Path:
        """Write the labels as CSV (see `labels_csv`) to `path`."""
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.labels_csv(), encoding="utf-8")
        return target

    def export_labeled_folders(
        self, directory: str | os.PathLike, link: bool = False, progress: Any = None
    ) -> FolderExport:
        """The labeled samples in `directory`/<class>/ (torchvision's ImageFolder layout):
        files copied (or symlinked with `link`), or written as PNGs for data sets without
        files. `directory` must be new or empty."""
        from activelab.label_folders import export_folders

        return export_folders(self, Path(directory), link, progress)

    def import_labels_csv(self, text: str, replace: bool = False) -> LabelEvent | None:
        """Apply a labels CSV (by sample index, or by file path for a model of files) in one
        change (undo reverts all of it)."""
        return self.labels.import_csv(text, replace=replace, files=self.sample_files())

    def import_labels(self, path: str | os.PathLike, replace: bool = False) -> LabelEvent | None:
        """`import_labels_csv` of the file at `path`."""
        text = Path(path).expanduser().read_text(encoding="utf-8-sig")
        return self.import_labels_csv(text, replace=replace)


class Lab:
    """activelab over one MLflow tracking store.

    With no arguments it uses `MLFLOW_TRACKING_URI`, or the embedded default store under the
    data directory (`$ACTIVELAB_HOME`, default `~/.activelab`).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        home: str | os.PathLike | None = None,
        tasks_dirs: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        self.settings = Settings.resolve(tracking_uri, home, tasks_dirs)
        # the drop-in folder exists from the start, so `cp my_task.py` into it just works
        with contextlib.suppress(OSError):  # a read-only home still opens its store
            (self.settings.home / "tasks").mkdir(parents=True, exist_ok=True)
        self._tracking: Tracking | None = None
        self._lock = threading.Lock()
        self._models: dict[str, Model] = {}

    def __repr__(self) -> str:
        return f"<activelab.Lab {self.settings.tracking_uri}>"

    @property
    def tracking(self) -> Tracking:
        with self._lock:
            if self._tracking is None:
                from activelab.tracking import Tracking

                self._tracking = Tracking(self.settings)
            return self._tracking

    @property
    def plugins(self) -> PluginHost:
        from activelab.plugins import get_plugins

        return get_plugins(self.settings.tasks_dirs)

    # --- models ------------------------------------------------------------------------------

    def create_model(
        self,
        name: str | None = None,
        preset: str = DEFAULT_PRESET,
        dataset: str = DEFAULT_DATASET,
        description: str | None = None,
        config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> Model:
        """A new model from a preset, with optional dotted config overrides.

        `config` may hold `dataset.<param>` (e.g. the image folder's path), `trainer.<param>`
        (or a bare trainer param such as `lr`) and `tasks.<task>.<field>`.
        """
        host = self.plugins
        overrides = dict(config or {})
        dataset_params = {
            k.split(".", 1)[1]: overrides.pop(k)
            for k in list(overrides)
            if k.startswith("dataset.")
        }
        get_preset(preset)  # an unknown preset fails before the data set is read
        params = dataset_params_for(dataset, host, dataset_params)
        info = host.get("datasets", dataset)(**params).info()
        cfg = config_from_preset(preset, dataset, host, info, params)
        cfg = apply_overrides(cfg, overrides, host)
        validate_config(cfg, host, info)
        for key in tags or {}:
            if not key or key.startswith(RESERVED_TAG_PREFIXES):
                raise InvalidConfigError(f"Tag {key!r} is reserved; pick another key.")
        now = str(_now_ms())
        exp_tags = {
            keys.MODEL_MARKER: "1",
            keys.CONFIG: cfg.to_json(),
            keys.PRESET: preset,
            keys.DATASET: dataset,
            keys.DATASET_INFO: info.to_json(),
            keys.CREATED_WITH: __version__,
            keys.LABELED_COUNT: "0",
            keys.TOTAL_EPOCHS: "0",
            keys.UPDATED_AT: now,
            # the MLflow UI shows a model-training experiment (runs, metrics), not a GenAI one
            keys.MLFLOW_EXPERIMENT_KIND: "custom_model_development",
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        if description:
            exp_tags[NOTE_TAG] = description
        if name is not None:
            experiment_id = self.tracking.create_experiment(check_model_name(name), exp_tags)
        else:
            experiment_id = self._create_auto_named(exp_tags)
        return self._wrap(self.tracking.get_experiment(experiment_id))

    def _create_auto_named(self, tags: dict[str, str]) -> str:
        for _attempt in range(20):  # another process may take the same number first
            taken = [AUTO_NAME_RE.match(n) for n in self.tracking.experiment_names_like("model-%")]
            number = max((int(m.group(1)) for m in taken if m), default=0) + 1
            try:
                return self.tracking.create_experiment(f"model-{number:03d}", tags)
            except ModelExistsError:
                continue
        raise ModelExistsError("Could not find a free model-NNN name; give the model a name.")

    def _wrap(self, experiment: Experiment | None) -> Model:
        if experiment is None:
            raise ModelNotFoundError("The model disappeared while it was being read.")
        cached = self._models.get(experiment.experiment_id)
        if cached is not None:
            cached._set_experiment(experiment)
            return cached
        model = Model(self, experiment)
        self._models[experiment.experiment_id] = model
        return model

    def list_models(
        self,
        name_contains: str | None = None,
        dataset: str | None = None,
        tags: dict[str, str] | None = None,
        deleted: bool = False,
        sort: str = "created",
    ) -> list[ModelCard]:
        """Cards of the activelab models (other experiments are left alone), in one search.

        `sort`: "created" (newest first), "updated" (latest change first) or "name".
        """
        CARD_UPDATES.flush()  # this process's own pending card figures first
        clauses = [f"tags.`{keys.MODEL_MARKER}` = '1'"]
        if dataset:
            clauses.append(f"tags.`{keys.DATASET}` = {_quote(dataset)}")
        for key, value in (tags or {}).items():
            clauses.append(f"tags.`{key}` = {_quote(value)}")
        with explain_refusal("list the models"):
            exps = self.tracking.search_experiments(
                " AND ".join(clauses), deleted=deleted, order_by=["creation_time DESC"]
            )
        cards = [ModelCard.from_experiment(e) for e in exps]
        if name_contains:
            needle = name_contains.lower()
            cards = [c for c in cards if needle in c.name.lower()]
        if sort == "updated":
            cards.sort(key=lambda c: c.updated, reverse=True)
        elif sort == "name":
            cards.sort(key=lambda c: c.name.lower())
        elif sort != "created":
            raise InvalidConfigError(f"Unknown sort {sort!r}; use created, updated or name.")
        return cards

    def get_model(self, name_or_id: str, deleted: bool = False) -> Model:
        """A model by name or experiment id; `deleted=True` finds it in the trash too."""
        ref = str(name_or_id).strip()
        with explain_refusal(f"read the model {ref!r}"):
            exp = self.tracking.get_experiment_by_name(ref)
            if exp is None and ref.isdigit():
                exp = self.tracking.get_experiment(ref)
        if exp is None and deleted:
            matches = self.tracking.search_experiments(
                f"tags.`{keys.DELETED_NAME}` = {_quote(ref)}",
                deleted=True,
                order_by=["creation_time DESC"],
            )
            exp = matches[0] if matches else None
        if exp is None or exp.tags.get(keys.MODEL_MARKER) != "1":
            raise ModelNotFoundError(
                f"No model named {ref!r} in {self.settings.tracking_uri}; "
                "`activelab models list` shows the models."
            )
        if exp.lifecycle_stage == "deleted" and not deleted:
            raise ModelNotFoundError(
                f"Model {ref!r} is deleted; `activelab models restore {exp.experiment_id}` "
                "brings it back."
            )
        return self._wrap(exp)

    def delete_model(self, name_or_id: str) -> Model:
        model = self.get_model(name_or_id)
        model.delete()
        return model

    def restore_model(self, name_or_id: str, name: str | None = None) -> Model:
        return self.get_model(name_or_id, deleted=True).restore(name)


def _quote(value: str) -> str:
    """An MLflow filter literal: single-quoted, or double-quoted when it holds a single quote."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise InvalidConfigError(
        f"{value!r} holds both kinds of quotes; refer to the model by its id instead."
    )
