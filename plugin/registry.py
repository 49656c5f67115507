"""A run's logged model into MLflow's Model Registry, under the model's name.

`register(model, run, alias)` makes a new version of the registered model named like the
activelab model from the run's logged model, points `alias` (e.g. "champion") at it, and
records it on the run (`activelab.registered_version`) and on the model's card
(`activelab.registered`), so `models:/NAME@champion` and `mlflow models serve` reach it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from activelab import keys
from activelab.errors import ActivelabError, InvalidConfigError, RunNotFoundError

if TYPE_CHECKING:
    from activelab.models import Model

FOLLOW_UPS_WAIT_S = 300  # a run that just ended may still be exporting its model
# MLflow's rule for aliases: letters, digits, _ and -; not "latest" nor a version like "v3"
ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
RESERVED_ALIAS = re.compile(r"latest|[vV]\d+")


@dataclass(frozen=True)
class RegisteredVersion:
    """A version of a registered model, made from one run's logged model."""

    name: str
    version: str
    alias: str | None
    run_id: str
    model_id: str

    @property
    def uri(self) -> str:
        """What `mlflow.pyfunc.load_model` and `mlflow models serve -m` take."""
        return f"models:/{self.name}@{self.alias}" if self.alias else self.version_uri

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "version": self.version, "alias": self.alias, "run": self.run_id,
             "model_id": self.model_id},
            separators=(",", ":"),
        )  # fmt: skip


def registered_name(model_name: str) -> str:
    """The registry's name for a model: its own, with the two characters MLflow refuses."""
    return re.sub(r"[/:]", "-", model_name).strip() or "model"


def check_alias(alias: str | None) -> None:
    if alias is None:
        return
    if not ALIAS.fullmatch(alias) or RESERVED_ALIAS.fullmatch(alias):
        raise InvalidConfigError(
            f"{alias!r} cannot be an alias: use letters, digits, '_' and '-' (e.g. champion), "
            "not 'latest' nor a version like 'v3'."
        )


def register(model: Model, run: str | None = None, alias: str | None = None) -> RegisteredVersion:
    """Register the logged model of `run` (default: the model's latest training run)."""
    from activelab.runs import get_run

    check_alias(alias)  # before anything changes
    tracking = model.lab.tracking
    run_id = run or model.refresh().card.latest_run
    if not run_id:
        raise RunNotFoundError(f"Model {model.name!r} has no training run yet; train it first.")
    found = get_run(tracking, run_id)
    if found.info.experiment_id != model.id:
        raise RunNotFoundError(f"Run {run_id} belongs to another model; register it from there.")
    found = _wait_for_follow_ups(tracking, found)
    status = found.info.status
    if status not in ("FINISHED", "KILLED"):
        raise ActivelabError(
            f"Run {run_id} is {status}; register a run that has finished "
            "(`activelab runs list` shows them)."
        )
    logged = [m for m in tracking.logged_models_of_run(model.id, run_id) if _ready(m)]
    if not logged:
        raise ActivelabError(
            f"Run {run_id} has no logged model to register (trained with "
            "trainer.log_model=false, or its export failed: see the run's log). Train again "
            "with trainer.log_model=true."
        )
    model_id = str(logged[0].model_id)
    name = registered_name(model.name)
    note = f"activelab model {model.name}, run {found.info.run_name} ({run_id})."
    version = tracking.register_logged_model(name, model_id, run_id, note)
    if alias:
        tracking.set_registered_alias(name, alias, version)
    made = RegisteredVersion(name, version, alias, run_id, model_id)
    tracking.set_run_tags(run_id, {keys.REGISTERED_VERSION: version})
    model.touch({keys.REGISTERED: made.to_json()})
    return made


def registered_of(tags: dict[str, str]) -> RegisteredVersion | None:
    """The model's last registered version from its card's tag (None if absent or edited into
    something that does not parse)."""
    try:
        found = json.loads(tags.get(keys.REGISTERED) or "null")
        return RegisteredVersion(
            str(found["name"]), str(found["version"]),
            str(found["alias"]) if found.get("alias") else None,
            str(found["run"]), str(found.get("model_id", "")),
        )  # fmt: skip
    except (ValueError, TypeError, KeyError):
        return None


def _ready(logged: Any) -> bool:
    return str(getattr(logged, "status", "READY")).endswith("READY")


def _wait_for_follow_ups(tracking: Any, run: Any) -> Any:
    """The run once its logged model is made (its follow-ups done, or its trainer gone)."""
    from activelab.runs import get_run, trainer_process_ended

    deadline = time.monotonic() + FOLLOW_UPS_WAIT_S
    while run.data.tags.get(keys.FOLLOW_UPS) == "running" and not trainer_process_ended(run):
        if time.monotonic() > deadline:
            raise ActivelabError(
                f"Run {run.info.run_id} is still making its logged model after "
                f"{FOLLOW_UPS_WAIT_S} s; try again when it is done."
            )
        time.sleep(0.5)  # a poll interval, bounded by the deadline above
        run = get_run(tracking, run.info.run_id)
    return run
