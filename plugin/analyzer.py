"""Analyzers inspect a trained run (confusion matrix, per-class accuracy, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from activelab.component import Component

if TYPE_CHECKING:
    from activelab.evaluation import AnalysisContext


class Analyzer(Component):
    """An analyzer plugin. Subclasses set `kind` and implement `analyze`.

    `analyze` returns a dict of results: tables (pandas DataFrames), figures (PNG bytes) and
    figures of merit (floats); the host logs them to the run as artifacts.
    """

    def analyze(self, context: AnalysisContext) -> dict[str, Any]:
        raise NotImplementedError
