"""Evaluate: a run's checkpoint rated task by task, its recent evaluations, originals beside
reconstructions, the network's layers, and the analyzers plugins register."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import param

from activelab.evaluation import (
    Evaluation,
    evaluate_run,
    open_checkpoint,
    recent_evaluations,
    run_analyzer,
)
from activelab.panel_app.vm.loaded import LoadedModel
from activelab.runs import RunSummary

if TYPE_CHECKING:
    from activelab.analyzer import AnalyzerResult
    from activelab.models import Lab
    from activelab.panel_app.vm.state import AppState

PER_ROW = 8  # samples per class (or per row) in the reconstruction grid


class EvaluateViewModel(LoadedModel, param.Parameterized):
    model_id = param.String(default="")
    run_id = param.String(default="")
    checkpoint = param.String(default="", doc="'' = the run's last checkpoint.")
    seed = param.Integer(default=0, doc="Which samples the reconstruction grid shows.")
    difference = param.Boolean(default=False, doc="Add |original - reconstruction| images.")

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.runs: list[RunSummary] = []

    @property
    def lab(self) -> Lab:
        return self.state.lab

    def load(self, model_id: str) -> list[RunSummary]:
        """The model's runs that have a checkpoint, newest first."""
        self.model = self.lab.get_model(model_id)
        self.runs = [r for r in self.model.runs(limit=50) if r.last_checkpoint]
        self.param.update(
            model_id=model_id, run_id=self.runs[0].run_id if self.runs else "", checkpoint=""
        )
        return self.runs

    def checkpoints(self) -> list[str]:
        return self.model.checkpoints(self.run_id) if self.run_id else []

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self) -> Evaluation:
        return evaluate_run(self.model, self.run_id, self.checkpoint or None)

    def history(self) -> list[Evaluation]:
        """The last evaluations of the run, newest first (the trend)."""
        return recent_evaluations(self.model, self.run_id) if self.run_id else []

    # --- reconstructions and the network --------------------------------------------------------

    def reconstruction_grid(self) -> tuple[list[str], list[np.ndarray]]:
        """(row names, images (rows, columns, C, H, W)): per class (true class, else your
        labels) or for the data set, 8 seeded random samples; originals, reconstructions and,
        with `difference`, their absolute difference."""
        _path, ctx = open_checkpoint(self.model, self.run_id, self.checkpoint or None)
        data = ctx.data
        rng = np.random.default_rng(self.seed)
        reference = data.true_labels if data.true_labels is not None else ctx.labels
        names, picks = [], []
        classes = data.info.classes
        if reference is not None and (np.asarray(reference) >= 0).any() and classes:
            for index, name in enumerate(classes):
                members = np.flatnonzero(np.asarray(reference) == index)
                if len(members):
                    names.append(str(name))
                    picks.append(rng.choice(members, min(PER_ROW, len(members)), replace=False))
        else:
            names.append("data set")
            picks.append(rng.choice(len(data.images), min(PER_ROW, len(data.images)), False))
        flat = [int(i) for chosen in picks for i in chosen]
        recon = ctx.trainer.reconstruct(data, ctx.tasks, ctx.state, flat)
        rows: list[np.ndarray] = []
        at = 0
        for chosen in picks:
            originals = data.images[np.asarray(chosen)]
            rebuilt = recon[at : at + len(chosen)]
            at += len(chosen)
            kinds = [originals, rebuilt] + (
                [np.abs(originals - rebuilt)] if self.difference else []
            )
            rows.append(np.stack(kinds, axis=1))  # (samples, kinds, C, H, W)
        return names, rows

    def model_summary(self) -> str:
        from activelab.runtime import model_summary

        _path, ctx = open_checkpoint(self.model, self.run_id, self.checkpoint or None)
        network = ctx.trainer.build_model(ctx.data.info, ctx.tasks)
        return model_summary(network)

    # --- analyzers ------------------------------------------------------------------------------

    def analyzers(self) -> dict[str, str]:
        """kind -> one-line summary of every registered analyzer."""
        found = self.lab.plugins.registry("analyzers")
        return {kind: found[kind].summary() for kind in sorted(found)}

    def analyze(self, kind: str, progress: Any = None) -> AnalyzerResult:
        return run_analyzer(self.model, self.run_id, kind, self.checkpoint or None, progress)

    def run_url(self) -> str | None:
        return self.state.context.run_url(self.model_id, self.run_id) if self.run_id else None
