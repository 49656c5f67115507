"""Train: the model's trainer and task list, launching, stopping, continuing and retrying runs,
and the job history. Every edit is saved to the model's config in MLflow at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import param

from activelab import keys
from activelab.config import apply_overrides, validate_config
from activelab.errors import InvalidConfigError
from activelab.panel_app.vm.loaded import LoadedModel
from activelab.presets import PRESETS
from activelab.runs import ACTIVE, RunSummary, request_stop, target_epochs

if TYPE_CHECKING:
    from activelab.config import ModelConfig
    from activelab.launcher import TrainingHandle
    from activelab.models import Lab
    from activelab.panel_app.vm.state import AppState
    from activelab.registry import RegisteredVersion

HISTORY_SIZE = 20


class TrainViewModel(LoadedModel, param.Parameterized):
    model_id = param.String(default="")
    config_version = param.Integer(default=0, doc="Grows whenever the model's config changes.")
    epochs = param.Integer(default=10, bounds=(1, 100_000), doc="Epochs of the next run.")
    history = param.List(default=[], doc="Recent runs of the model (RunSummary), newest first.")
    run_id = param.String(default="", doc="The run the monitor follows ('' for none).")
    plugins_generation = param.Integer(default=-1, doc="The plugin set the page was built for.")
    backend = param.String(default="local", doc="Where the next run's worker runs.")
    backend_address = param.String(default="", doc="The backend's address ('' for its default).")
    backend_cpus = param.Number(default=None, allow_None=True, bounds=(0, None), doc="CPUs asked.")
    backend_gpus = param.Number(default=None, allow_None=True, bounds=(0, None), doc="GPUs asked.")

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state

    @property
    def lab(self) -> Lab:
        return self.state.lab

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    # --- loading ------------------------------------------------------------------------------

    def load(self, model_id: str) -> None:
        """The model, its config and its history; the monitor follows the newest run."""
        self.model = self.lab.get_model(model_id)
        self.epochs = self.model.default_epochs()
        self.refresh_history()
        newest = self.history[0].run_id if self.history else ""
        self.param.update(model_id=model_id, run_id=newest, config_version=self.config_version + 1)

    def refresh_history(self) -> list[RunSummary]:
        """Recent runs (a trainer that died without a word is marked FAILED on the way)."""
        self.history = self.model.runs(limit=HISTORY_SIZE)
        return self.history

    def refresh_config(self) -> bool:
        """Pick up config changes made elsewhere (CLI, another session); True if any."""
        before = self.model.config.to_json()
        self.model.refresh()
        if self.model.config.to_json() == before:
            return False
        self.config_version += 1
        return True

    # --- the registry -------------------------------------------------------------------------

    def trainer_kinds(self) -> list[str]:
        return sorted(self.lab.plugins.registry("trainers"))

    def task_kinds(self) -> dict[str, str]:
        """kind -> one-line summary of every registered task class."""
        found = self.lab.plugins.registry("tasks")
        return {kind: found[kind].summary() for kind in sorted(found)}

    def backend_kinds(self) -> dict[str, str]:
        """kind -> one-line summary of every launcher backend (local first)."""
        found = self.lab.plugins.registry("backends")
        kinds = sorted(found, key=lambda kind: (kind != "local", kind))
        return {kind: found[kind].summary() for kind in kinds}

    def backend_takes(self) -> set[str]:
        """Which of address / cpus / gpus the chosen backend declares."""
        found = self.lab.plugins.registry("backends").get(self.backend)
        declared = {spec.name for spec in found.param_specs()} if found else set()
        return declared & {"address", "cpus", "gpus"}

    def launch_options(self) -> dict[str, Any]:
        """The backend options of the next launch (only those the backend declares)."""
        takes = self.backend_takes()
        values = {
            "address": self.backend_address.strip() or None,
            "cpus": self.backend_cpus,
            "gpus": self.backend_gpus,
        }
        return {
            "backend": self.backend,
            **{k: v for k, v in values.items() if k in takes and v is not None},
        }

    def load_errors(self) -> list[str]:
        """Plugins (e.g. task files) that failed to load: 'file:line: message'."""
        return [str(error) for error in self.lab.plugins.errors.values()]

    def plugins_changed(self) -> bool:
        """True once after a task file was added, edited or removed (hot reload)."""
        generation = self.lab.plugins.generation
        if generation == self.plugins_generation:
            return False
        self.plugins_generation = generation
        return True

    # --- editing the config (each saved to MLflow at once) ---------------------------------------

    def _save(self, action: Any) -> ModelConfig:
        config = action()
        self.config_version += 1
        return config

    def set_trainer(self, kind: str) -> ModelConfig:
        return self._save(lambda: self.model.update_config({"trainer": kind}))

    def set_trainer_param(self, name: str, value: Any) -> ModelConfig:
        return self._save(lambda: self.model.update_config({f"trainer.{name}": value}))

    def set_task_field(self, task: str, name: str, value: Any) -> ModelConfig:
        if name == "latent_slice" and isinstance(value, str) and not value.strip():
            value = None
        return self._save(lambda: self.model.update_config({f"tasks.{task}.{name}": value}))

    def add_task(
        self, kind: str, name: str = "", weight: float = 1.0, latent_slice: str = ""
    ) -> ModelConfig:
        return self._save(
            lambda: self.model.add_task(
                kind,
                name=name.strip() or None,
                weight=weight,
                latent_slice=latent_slice.strip() or None,
            )
        )

    def remove_task(self, name: str) -> ModelConfig:
        return self._save(lambda: self.model.remove_task(name))

    def apply_preset(self, preset: str) -> ModelConfig:
        """The preset's learning rate and task weights (for tasks the model has)."""
        chosen = PRESETS[preset]
        names = {t.name for t in self.config.tasks}
        overrides: dict[str, Any] = {}
        if "lr" in self.config.trainer_params:
            overrides["trainer.lr"] = chosen.lr
        for task, weight in chosen.weights.items():
            if task in names:
                overrides[f"tasks.{task}.weight"] = weight
        return self._save(lambda: self.model.update_config(overrides))

    # --- before launching -----------------------------------------------------------------------

    def run_name_preview(self) -> str:
        from activelab.launcher import _run_name

        number = int(self.model.experiment.tags.get(keys.RUN_COUNT, 0) or 0) + 1
        return _run_name(self.model, number, self.epochs, None)

    def problems(self) -> list[str]:
        """What would stop a launch, in words a person can act on ([] when ready): the
        config's problems and a run still training."""
        found = self.config_problems()
        running = self.running()
        if running is not None:
            found.append(f"Run {running.name!r} is still training; stop it or wait for it to end.")
        return found

    def config_problems(self) -> list[str]:
        """What in the model's settings would stop a launch ([] when ready)."""
        found = []
        try:
            config = apply_overrides(self.config, {}, self.lab.plugins)
            validate_config(config, self.lab.plugins, self.model.dataset_info)
            if not any(t.enabled for t in config.tasks):
                found.append("Every task is disabled: enable at least one task.")
        except InvalidConfigError as exc:
            found.append(str(exc))
        except Exception as exc:  # e.g. a plugin that disappeared (its file was deleted)
            found.append(f"{exc}")
        return found

    def running(self) -> RunSummary | None:
        return next((r for r in self.history if r.status in ACTIVE), None)

    # --- launching and stopping ----------------------------------------------------------------

    def start(self) -> TrainingHandle:
        """A new run with the model's config (in its own process; returns at once)."""
        problems = self.problems()
        if problems:
            raise InvalidConfigError(problems[0])
        handle = self.model.launch(epochs=self.epochs, **self.launch_options())
        self._follow(handle.run_id)
        return handle

    def stop(self, run_id: str | None = None) -> None:
        """Ask the run to stop at its next step (it saves a checkpoint and ends KILLED)."""
        request_stop(self.lab.tracking, run_id or self.run_id)
        self.refresh_history()

    def checkpoints(self, run_id: str) -> list[str]:
        return self.model.checkpoints(run_id)

    def continue_from(self, run_id: str, checkpoint: str | None = None) -> TrainingHandle:
        """A new run that starts from `checkpoint` of `run_id` (its latest if None)."""
        source = f"{run_id}:{checkpoint.rsplit('/', 1)[-1]}" if checkpoint else run_id
        handle = self.model.launch(epochs=self.epochs, resume_from=source, **self.launch_options())
        self._follow(handle.run_id)
        return handle

    def register(self, run_id: str, alias: str) -> RegisteredVersion:
        """The run's logged model into MLflow's Model Registry (see `Model.register`)."""
        return self.model.register(run=run_id, alias=alias.strip() or None)

    def retry(self, run_id: str) -> TrainingHandle:
        """The same run again: its epochs, from the checkpoint it started from, if any, on the
        backend (and address) it ran on."""
        run = self.lab.tracking.get_run(run_id)
        tags = run.data.tags
        epochs = target_epochs(run) or self.epochs
        parent, checkpoint = tags.get(keys.PARENT_RUN), tags.get(keys.PARENT_CHECKPOINT)
        resume = f"{parent}:{checkpoint.rsplit('/', 1)[-1]}" if parent and checkpoint else None
        where = {"backend": tags.get(keys.BACKEND, "local")}
        if tags.get(keys.BACKEND_ADDRESS):
            where["address"] = tags[keys.BACKEND_ADDRESS]
        handle = self.model.launch(epochs=epochs, resume_from=resume, **where)
        self._follow(handle.run_id)
        return handle

    def _follow(self, run_id: str) -> None:
        self.refresh_history()
        self.run_id = run_id

    def run_url(self, run_id: str) -> str | None:
        return self.state.context.run_url(self.model_id, run_id)
