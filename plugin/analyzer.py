"""Analyzers: reports on a trained checkpoint (a confusion matrix, per-class accuracy, ...)
that plugins register with `register_analyzers`; the Evaluate page lists and runs them."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

from activelab.component import Component

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from activelab.config import ModelConfig
    from activelab.dataset import DataBundle


@dataclass
class AnalysisInput:
    """What an analyzer gets: the data, the checkpoint's per-sample predictions (`z0..`,
    `predicted`, `certainty`, `p0..`), the model's labels (-1 = none) and config."""

    data: DataBundle
    predictions: pd.DataFrame
    labels: np.ndarray
    config: ModelConfig
    checkpoint: str


@dataclass
class AnalyzerResult:
    title: str
    table: pd.DataFrame | None = None
    note: str = ""

    def html(self) -> str:
        """A standalone page (escaped), for the run's artifacts in the MLflow UI."""
        body = self.table.to_html(escape=True, border=0) if self.table is not None else ""
        return (
            f"<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title></head>"
            f"<body><h2>{html.escape(self.title)}</h2><p>{html.escape(self.note)}</p>{body}"
            "</body></html>"
        )


class Analyzer(Component):
    """A report on a checkpoint. Subclasses set `kind` and implement `analyze`."""

    def analyze(self, inputs: AnalysisInput) -> AnalyzerResult:
        raise NotImplementedError
