"""A Bokeh plot of metric curves that grows by streaming (new points only), with smoothing,
log scale, a hover of step / value / time / elapsed, and the toolbar's PNG save."""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.models.annotations import Legend
from bokeh.palettes import Category10_10, Category20_20
from bokeh.plotting import figure

from activelab.panel_app.vm.monitor import smooth
from activelab.tracking import MetricSeries


def palette(count: int) -> list[str]:
    return list(Category10_10[: max(count, 1)]) if count <= 10 else list(Category20_20) * 3


def short(key: str) -> str:
    """`loss/total` -> `total`, `epoch/loss/kl` -> `kl`, `val/loss/kl` -> `val kl`,
    `eval/classification/labeled_accuracy` -> `classification labeled_accuracy`."""
    for prefix, shown in (("epoch/loss/", ""), ("loss/", ""), ("val/loss/", "val ")):
        if key.startswith(prefix):
            return shown + key[len(prefix) :]
    family, _, rest = key.partition("/")
    return f"{'val ' if family == 'val' else ''}{rest.replace('/', ' ')}" if rest else key


# The first steps of a run (an untrained network's losses) can be ten times what follows: the
# y axis fits the curves after them, so the part of the run that matters is not a flat line.
# (Reset or box zoom still reach every point.)
WARM_UP_SHARE = 0.1  # of each curve's points, when it has at least MIN_POINTS_TO_TRIM
MIN_POINTS_TO_TRIM = 20


def fitted_range(curves: list[np.ndarray]) -> tuple[float, float] | None:
    """A y range that fits every curve after its first steps (None: nothing to fit)."""
    kept = []
    for values in curves:
        values = values[np.isfinite(values)]
        if len(values) >= MIN_POINTS_TO_TRIM:
            values = values[int(len(values) * WARM_UP_SHARE) :]
        kept.append(values)
    found = np.concatenate(kept) if kept else np.array([])
    if not len(found):
        return None
    low, high = float(found.min()), float(found.max())
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    return low - pad, high + pad


class CurvePlot:
    """One figure, one line per metric. `show` draws from scratch; `extend` streams."""

    def __init__(self, title: str, x_label: str, name: str, height: int = 280) -> None:
        self.title, self.x_label, self.name, self.height = title, x_label, name, height
        self.pane = pn.pane.Bokeh(None, sizing_mode="stretch_width", height=height, visible=False)
        self.sources: dict[str, ColumnDataSource] = {}
        self.smoothing = 0.0
        self.log = False

    def clear(self) -> None:
        self.sources = {}
        self.pane.param.update(object=None, visible=False)

    def _columns(self, series: MetricSeries, started_ms: int, full: list[float]) -> dict:
        n = len(series.steps)
        shown = smooth(full, self.smoothing)[-n:] if n else []
        stamps = np.asarray(series.timestamps, dtype=np.int64)
        return {
            "step": np.asarray(series.steps, dtype=np.int64),
            "value": np.asarray(series.values, dtype=np.float64),
            "shown": np.asarray(shown, dtype=np.float64),
            "time": stamps.astype("datetime64[ms]"),
            "elapsed": (stamps - started_ms) / 1000.0,
        }

    def show(
        self, curves: dict[str, MetricSeries], started_ms: int, smoothing: float, log: bool
    ) -> None:
        """Build the figure for these curves (a new run, or new smoothing / scale)."""
        self.smoothing, self.log = smoothing, log
        if not curves:
            self.clear()
            return
        plot = figure(
            title=self.title,
            height=self.height,
            sizing_mode="stretch_width",
            y_axis_type="log" if log else "linear",
            tools="pan,wheel_zoom,box_zoom,reset,save",
            toolbar_location="above",
            name=self.name,
        )
        plot.xaxis.axis_label = self.x_label
        fitted = None if log else fitted_range([np.asarray(c.values) for c in curves.values()])
        if fitted is not None:
            plot.y_range = Range1d(start=fitted[0], end=fitted[1])
        colors = palette(len(curves))
        self.sources = {}
        renderers: list[Any] = []  # (Bokeh's HoverTool wants DataRenderers)
        items: list[tuple[str, list[Any]]] = []
        for color, (key, series) in zip(colors, sorted(curves.items()), strict=False):
            source = ColumnDataSource(self._columns(series, started_ms, series.values))
            self.sources[key] = source
            if smoothing > 0:  # the raw values stay visible, faintly, under the smoothed line
                plot.line("step", "value", source=source, color=color, alpha=0.2)
            line = plot.line("step", "shown", source=source, color=color, line_width=2, name=key)
            renderers.append(line)
            items.append((short(key), [line]))
        plot.add_tools(
            HoverTool(
                renderers=renderers,
                tooltips=[
                    ("metric", "$name"),
                    (self.x_label, "@step"),
                    ("value", "@value{0.[0000]}"),
                    ("time", "@time{%H:%M:%S}"),
                    ("elapsed", "@elapsed{0.0} s"),
                ],
                formatters={"@time": "datetime"},
                mode="vline",
            )
        )
        # beside the plot, not over the curves; a click on an entry hides its curve
        legend = Legend(items=items, click_policy="hide", label_text_font_size="11px", spacing=0)
        plot.add_layout(legend, "right")
        self.pane.param.update(object=plot, visible=True)

    def extend(
        self, fresh: dict[str, MetricSeries], curves: dict[str, MetricSeries], started_ms: int
    ) -> None:
        """Stream new points; a new metric or a re-read (downsampled) curve redraws."""
        for key, series in fresh.items():
            source = self.sources.get(key)
            replaced = source is not None and len(series.steps) and (
                len(source.data["step"]) and series.steps[0] <= int(source.data["step"][-1])
            )  # fmt: skip
            if source is None or replaced:
                self.show(curves, started_ms, self.smoothing, self.log)
                return
            source.stream(self._columns(series, started_ms, curves[key].values))
        self._refit()

    def _refit(self) -> None:
        """Widen the fitted y range when the curves grow out of it (never narrowed while
        streaming: a person's zoom stays as long as the curves stay inside it)."""
        plot = self.pane.object
        y_range = getattr(plot, "y_range", None)
        if not isinstance(y_range, Range1d):
            return
        fitted = fitted_range([np.asarray(s.data["value"]) for s in self.sources.values()])
        start, end = float(y_range.start), float(y_range.end)  # type: ignore[arg-type]
        if fitted is not None and (fitted[0] < start or fitted[1] > end):
            y_range.update(start=min(fitted[0], start), end=max(fitted[1], end))
