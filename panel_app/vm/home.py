"""Home: model cards, create/rename/delete/restore, quick start, activity, system status."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import param

from activelab.connectivity import refusal_message, refusal_status
from activelab.errors import ActivelabError
from activelab.models import ModelCard
from activelab.presets import PRESETS, QUICK_START_LABELS_PER_CLASS, quick_start_labels
from activelab.runs import RunSummary, search_runs

if TYPE_CHECKING:
    from activelab.models import Lab
    from activelab.panel_app.vm.state import AppState


def system_status() -> dict[str, Any]:
    """CPU and memory use of this machine, and its GPUs if any."""
    import psutil

    memory = psutil.virtual_memory()
    status: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpus": psutil.cpu_count() or 1,
        "memory_percent": memory.percent,
        "memory_used_gb": round(memory.used / 2**30, 1),
        "memory_total_gb": round(memory.total / 2**30, 1),
        "gpus": [],
    }
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,utilization.gpu,memory.used,memory.total",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=2,
                check=True,
            ).stdout
            for line in out.strip().splitlines():
                name, util, used, total = (part.strip() for part in line.split(","))
                status["gpus"].append(
                    {
                        "name": name,
                        "util_percent": float(util),
                        "memory_used_mb": float(used),
                        "memory_total_mb": float(total),
                    }
                )
        except (subprocess.SubprocessError, ValueError, OSError):
            pass
    elif "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        torch = sys.modules["torch"]
        status["gpus"] = [
            {"name": torch.cuda.get_device_name(i)} for i in range(torch.cuda.device_count())
        ]
    return status


class HomeViewModel(param.Parameterized):
    cards = param.List(default=[], doc="Every model's card, newest first.")
    query = param.String(default="", doc="Show cards whose name, data set or tags match.")
    recent_runs = param.List(default=[], doc="[(model name, RunSummary)], newest first.")
    system = param.Dict(default={})
    loaded = param.Boolean(default=False)
    error = param.String(default="")

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state

    @property
    def lab(self) -> Lab:
        return self.state.lab

    # --- reading -----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Cards (one MLflow search), recent runs and system status."""
        try:
            cards = self.lab.list_models()
            recent: list[tuple[str, RunSummary]] = []
            if cards:
                names = {c.id: c.name for c in cards}
                runs = search_runs(
                    self.lab.tracking, list(names)[:100], kind="train", max_results=8
                )
                recent = [
                    (names.get(r.info.experiment_id, "?"), RunSummary.from_run(r)) for r in runs
                ]
            self.param.update(
                cards=cards, recent_runs=recent, system=system_status(), loaded=True, error=""
            )
        except Exception as exc:  # an unreachable server: say so, keep the old cards
            self.param.update(error=f"Could not read models: {exc}", loaded=True)

    @property
    def visible_cards(self) -> list[ModelCard]:
        """Cards whose name, data set or a `key=value` tag holds every word of the query."""
        words = self.query.lower().split()
        if not words:
            return list(self.cards)

        def haystack(card: ModelCard) -> str:
            tags = " ".join(f"{k}={v}" for k, v in card.tags.items())
            return f"{card.name} {card.dataset} {tags}".lower()

        return [c for c in self.cards if all(w in haystack(c) for w in words)]

    @property
    def presets(self) -> list[str]:
        return list(PRESETS)

    @property
    def datasets(self) -> list[str]:
        return sorted(self.lab.plugins.registry("datasets"))

    # --- actions (each returns what the view needs to tell the person) -------------------------

    def create(
        self,
        name: str = "",
        description: str = "",
        preset: str = "default",
        dataset: str = "digits",
        dataset_params: dict[str, Any] | None = None,
    ) -> ModelCard:
        config = {
            f"dataset.{k}": v for k, v in (dataset_params or {}).items() if v not in ("", None)
        }
        model = self.lab.create_model(
            name.strip() or None,
            preset=preset,
            dataset=dataset,
            description=description.strip() or None,
            config=config,
        )
        self.refresh()
        return model.card

    def rename(self, model_id: str, new_name: str) -> ModelCard:
        model = self.lab.get_model(model_id).rename(new_name.strip())
        self.refresh()
        return model.card

    def delete(self, model_id: str) -> ModelCard:
        model = self.lab.delete_model(model_id)
        if self.state.model_id == model_id:
            self.state.model_id = ""
        self.refresh()
        return model.card

    def restore(self, model_id: str) -> ModelCard:
        model = self.lab.restore_model(model_id)
        self.refresh()
        return model.card

    def quick_start(self) -> tuple[ModelCard, str]:
        """A digits model with a few labels per class, training for a short run."""
        from activelab.tasks.datasets import Digits

        taken = {c.name for c in self.cards}
        name = "quick-start"
        number = 2
        while name in taken:
            name = f"quick-start-{number}"
            number += 1
        model = self.lab.create_model(
            name,
            preset="default",
            dataset="digits",
            description=f"Quick start: {QUICK_START_LABELS_PER_CLASS} labels per class from the "
            "digits ground truth, trained for the default number of epochs.",
        )
        seed_labels = quick_start_labels(Digits().load().true_labels)
        model.set_labels(seed_labels)
        handle = model.launch()  # the trainer's default length for the data set
        self.refresh()
        return model.card, handle.run_id


def describe_error(exc: BaseException) -> str:
    """One line for a notification."""
    if isinstance(exc, ActivelabError):
        return str(exc)
    refused = refusal_status(exc)
    if refused is not None:  # MLflow's auth app said no to something we did not wrap
        return refusal_message(refused, "do this")
    return f"{type(exc).__name__}: {exc}"
