"""Analyzers: reports on a trained checkpoint (a confusion matrix, per-class accuracy, ...)
that plugins register with `register_analyzers`; the Evaluate page lists and runs them."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
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
    `predicted`, `certainty`, `p0..`), the model's labels (-1 = none) and config; and, for
    analyzers that look across training, the run's checkpoints (oldest first) with a way to
    compute the predictions of any of them."""

    data: DataBundle
    predictions: pd.DataFrame
    labels: np.ndarray
    config: ModelConfig
    checkpoint: str
    checkpoints: tuple[str, ...] = ()
    predictions_at: Callable[[str], pd.DataFrame] | None = field(default=None, repr=False)
    # Long analyzers report (done, total, what) so the CLI and the app can show progress.
    progress: Callable[[int, int, str], None] = field(default=lambda *_: None, repr=False)


@dataclass
class AnalyzerResult:
    """A table, an image (height x width x 3, uint8) or both, with a one-line note."""

    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    image: np.ndarray | None = field(default=None, repr=False)

    def png(self) -> bytes | None:
        """The image as PNG bytes (None without one)."""
        if self.image is None:
            return None
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(self.image).save(out, format="PNG")
        return out.getvalue()

    def html(self) -> str:
        """A standalone page (escaped), for the run's artifacts in the MLflow UI."""
        body = self.table.to_html(escape=True, border=0) if self.table is not None else ""
        png = self.png()
        if png is not None:  # inline, so the page needs nothing beside it
            body = (
                f"<img alt='{html.escape(self.title)}' src='data:image/png;base64,"
                f"{base64.b64encode(png).decode()}'>" + body
            )
        return (
            f"<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title></head>"
            f"<body><h2>{html.escape(self.title)}</h2><p>{html.escape(self.note)}</p>{body}"
            "</body></html>"
        )


class Analyzer(Component):
    """A report on a checkpoint. Subclasses set `kind` and implement `analyze`."""

    def analyze(self, inputs: AnalysisInput) -> AnalyzerResult:
        raise NotImplementedError
