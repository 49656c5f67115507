"""A model's configuration: data set, trainer and tasks, with presets and dotted overrides.

Stored as JSON in the experiment tag `activelab.config`. Every value is checked against the
declarations of the registered plugin classes, so a typo fails before anything starts.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from activelab.dataset import is_image_data
from activelab.errors import InvalidConfigError
from activelab.presets import DEFAULT_PRESET, get_preset
from activelab.task import parse_latent_slice

if TYPE_CHECKING:
    from activelab.dataset import DatasetInfo
    from activelab.plugins import PluginHost

DEFAULT_DATASET = "digits"
DEFAULT_TRAINER = "ssvae"
TASK_FIELDS = ("kind", "weight", "enabled", "latent_slice")
TASK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


@dataclass
class TaskSpec:
    """One task in a model's loss: which class (`kind`), under which name, how weighted."""

    name: str
    kind: str
    weight: float = 1.0
    enabled: bool = True
    latent_slice: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelConfig:
    preset: str
    dataset: str
    dataset_params: dict[str, Any]
    trainer: str
    trainer_params: dict[str, Any]
    tasks: list[TaskSpec]

    # --- (de)serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # tasks too (asdict recurses)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        trainer = data.get("trainer", DEFAULT_TRAINER)
        trainer_params = dict(data.get("trainer_params", {}))
        if trainer == DEFAULT_TRAINER and trainer_params and "encoder" not in trainer_params:
            # saved before the conv network existed: its checkpoints are the MLP's
            trainer_params["encoder"] = "mlp"
        return cls(
            preset=data.get("preset", DEFAULT_PRESET),
            dataset=data["dataset"],
            dataset_params=dict(data.get("dataset_params", {})),
            trainer=trainer,
            trainer_params=trainer_params,
            tasks=[TaskSpec(**t) for t in data.get("tasks", [])],
        )

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def copy(self) -> ModelConfig:
        return ModelConfig.from_dict(copy.deepcopy(self.to_dict()))

    # --- lookups -----------------------------------------------------------------------------

    def task(self, name: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.name == name:
                return spec
        known = ", ".join(t.name for t in self.tasks) or "none"
        raise InvalidConfigError(f"The model has no task {name!r}; its tasks are: {known}.")

    def flat_params(self) -> dict[str, str]:
        """MLflow params: one key per declared value (dataset.*, trainer.*, task.<name>.*)."""
        flat: dict[str, Any] = {
            "preset": self.preset,
            "dataset": self.dataset,
            "trainer": self.trainer,
        }
        flat.update({f"dataset.{k}": v for k, v in self.dataset_params.items()})
        flat.update({f"trainer.{k}": v for k, v in self.trainer_params.items()})
        for spec in self.tasks:
            prefix = f"task.{spec.name}"
            flat.update(
                {
                    f"{prefix}.kind": spec.kind,
                    f"{prefix}.weight": spec.weight,
                    f"{prefix}.enabled": spec.enabled,
                    f"{prefix}.latent_slice": spec.latent_slice,
                }
            )
            flat.update({f"{prefix}.{k}": v for k, v in spec.params.items()})
        return {k: _param_text(v) for k, v in flat.items()}


def _param_text(value: Any) -> str:
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return str(value)


# --- building and editing -------------------------------------------------------------------


def dataset_params_for(
    dataset: str, host: PluginHost, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The data set's declared defaults with `overrides` parsed and checked."""
    dataset_cls = host.get("datasets", dataset)
    return {**dataset_cls.defaults(), **dataset_cls.validate_params(overrides or {})}


def config_from_preset(
    preset: str,
    dataset: str,
    host: PluginHost,
    info: DatasetInfo,
    dataset_params: dict[str, Any] | None = None,
) -> ModelConfig:
    """A full config (every declared default filled in) for a preset and data set.

    A preset task the data cannot serve (classification without classes) is left out.
    """
    chosen = get_preset(preset)
    trainer_cls = host.get("trainers", DEFAULT_TRAINER)
    trainer_params = trainer_cls.defaults()
    if "lr" in trainer_params:
        trainer_params["lr"] = chosen.lr
    if is_image_data(info):
        trainer_params.update(
            {k: v for k, v in chosen.image_trainer.items() if k in trainer_params}
        )
    tasks = []
    weights = dict(chosen.weights)
    if is_image_data(info):
        weights.update(chosen.image_weights)
    for name, weight in weights.items():
        task_cls = host.get("tasks", name)
        if task_cls.requires <= info.provides:
            task_params = task_cls.defaults()
            if is_image_data(info):
                task_params.update(chosen.image_task_params.get(name, {}))
            tasks.append(TaskSpec(name=name, kind=name, weight=weight, params=task_params))
    params = dataset_params_for(dataset, host, dataset_params)
    return ModelConfig(preset, dataset, params, DEFAULT_TRAINER, trainer_params, tasks)


def apply_overrides(
    config: ModelConfig, overrides: dict[str, Any], host: PluginHost
) -> ModelConfig:
    """A copy of `config` with dotted overrides applied and checked.

    Keys: `trainer.<param>` (or a bare trainer param such as `lr`), `dataset.<param>`,
    `tasks.<task name>.<weight|enabled|latent_slice|param>`, `trainer` (the trainer kind).
    Values may be strings (from a CLI or a form); they are parsed by the declared type.
    """
    result = config.copy()
    trainer_cls = host.get("trainers", result.trainer)
    for key, raw in overrides.items():
        parts = key.split(".")
        if key == "trainer":
            trainer_cls = host.get("trainers", str(raw))
            result.trainer = str(raw)
            result.trainer_params = {
                **trainer_cls.defaults(),
                **{k: v for k, v in result.trainer_params.items() if k in trainer_cls.defaults()},
            }
        elif key in ("dataset", "preset"):
            raise InvalidConfigError(
                f"{key!r} is fixed when a model is created; create a new model to change it."
            )
        elif parts[0] == "trainer" and len(parts) == 2:
            result.trainer_params[parts[1]] = trainer_cls.parse_value(parts[1], raw)
        elif parts[0] == "dataset" and len(parts) == 2:
            dataset_cls = host.get("datasets", result.dataset)
            result.dataset_params[parts[1]] = dataset_cls.parse_value(parts[1], raw)
        elif parts[0] == "tasks" and len(parts) == 3:
            _set_task_field(result.task(parts[1]), parts[2], raw, host)
        elif len(parts) == 1 and key in trainer_cls.defaults():
            result.trainer_params[key] = trainer_cls.parse_value(key, raw)
        else:
            raise InvalidConfigError(
                f"Unknown setting {key!r}. Use trainer.<param> (e.g. lr), dataset.<param> or "
                "tasks.<task>.<weight|enabled|latent_slice|param>; "
                "`activelab plugins show` lists the parameters."
            )
    return result


def _set_task_field(spec: TaskSpec, fieldname: str, raw: Any, host: PluginHost) -> None:
    task_cls = host.get("tasks", spec.kind)
    if fieldname == "kind":
        raise InvalidConfigError("A task's class cannot change; remove the task and add another.")
    value = task_cls.parse_value(fieldname, raw)
    if fieldname in TASK_FIELDS:
        setattr(spec, fieldname, value)
    else:
        spec.params[fieldname] = value


def add_task(
    config: ModelConfig,
    kind: str,
    host: PluginHost,
    name: str | None = None,
    weight: float | str = 1.0,
    enabled: bool = True,
    latent_slice: str | None = None,
    params: dict[str, Any] | None = None,
) -> ModelConfig:
    """A copy of `config` with one more task (checked by `validate_config` afterwards)."""
    task_cls = host.get("tasks", kind)
    result = config.copy()
    taken = {t.name for t in result.tasks}
    if name is None:
        name = kind.replace("-", "_")
        suffix = 2
        while name in taken:
            name = f"{kind.replace('-', '_')}_{suffix}"
            suffix += 1
    if name in taken:
        raise InvalidConfigError(f"The model already has a task named {name!r}; pick another name.")
    spec = TaskSpec(
        name=name,
        kind=kind,
        weight=task_cls.parse_value("weight", weight),
        enabled=task_cls.parse_value("enabled", enabled),
        latent_slice=task_cls.parse_value("latent_slice", latent_slice),
        params={**task_cls.defaults(), **task_cls.validate_params(params or {})},
    )
    result.tasks.append(spec)
    return result


def remove_task(config: ModelConfig, name: str) -> ModelConfig:
    result = config.copy()
    result.task(name)  # raises with the list of task names
    result.tasks = [t for t in result.tasks if t.name != name]
    return result


def validate_config(config: ModelConfig, host: PluginHost, info: DatasetInfo) -> None:
    """Raise InvalidConfigError if any part of `config` does not fit the plugins or the data."""
    trainer_cls = host.get("trainers", config.trainer)
    trainer_cls.validate_params(config.trainer_params)
    host.get("datasets", config.dataset).validate_params(config.dataset_params)
    latent_dim = config.trainer_params.get("latent_dim")
    names: set[str] = set()
    for spec in config.tasks:
        if not TASK_NAME_RE.match(spec.name):
            raise InvalidConfigError(
                f"Task name {spec.name!r} must start with a letter and hold only letters, "
                "digits, '_' and '-' (at most 64)."
            )
        if spec.name in names or spec.name == "total":
            raise InvalidConfigError(f"Task name {spec.name!r} is used twice or reserved.")
        names.add(spec.name)
        task_cls = host.get("tasks", spec.kind)
        task_cls.validate_params(spec.params)
        for fieldname in ("weight", "enabled", "latent_slice"):
            task_cls.check_value(fieldname, getattr(spec, fieldname))
        parse_latent_slice(spec.latent_slice, latent_dim)
        task_cls(name=spec.name).check_data(info)
