"""Compare: pick runs across models, overlay their curves, diff their params, and see their
final and best figures and the labels they trained on."""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import panel as pn
from bokeh.models import HoverTool
from bokeh.models.annotations import Legend
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from activelab.panel_app.pages.common import Page, esc
from activelab.panel_app.vm.compare import X_AXES, CompareViewModel
from activelab.panel_app.vm.home import describe_error
from activelab.panel_app.vm.monitor import smooth
from activelab.panel_app.vm.state import AppState

log = logging.getLogger(__name__)

STATUSES = {"any status": "", "finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED",
            "training": "RUNNING"}  # fmt: skip
DASHES = ["solid", "dashed", "dotted", "dotdash", "dashdot"]
PRESELECTED_RUNS = 2
PLOT_HEIGHT = 360  # the curves' part of the figure
LEGEND_LINE_PX = 19  # each legend entry below it
PICK_RUNS = "Choose runs above: their curves, final figures and params appear here."


def picker_options(options: dict[str, str]) -> dict[str, str]:
    """A MultiChoice draws its option labels as HTML (Choices.js): labels made of model and
    run names are escaped, so they show as typed and never run."""
    return {esc(label): value for label, value in options.items()}


class FrameTable(pn.viewable.Viewer):
    """A read-only table whose columns change with what is compared.

    Tabulator in the browser can fail when its columns are replaced while it is still being
    built ("Cannot read properties of null (reading 'firstChild')" in setColumns, seen under
    load). New columns therefore get a new widget; new rows of the same columns are a value
    update of the shown one.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = {"disabled": True, "show_index": False, "sizing_mode": "stretch_width",
                        "layout": "fit_data_stretch", **options}  # fmt: skip
        self.table = pn.widgets.Tabulator(pd.DataFrame(), **self.options)
        self.holder = pn.Column(self.table, sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        return self.holder

    def set_frame(self, frame: pd.DataFrame, hidden: list[str] | None = None) -> None:
        if list(frame.columns) == list(self.table.value.columns):
            self.table.param.update(value=frame, hidden_columns=hidden or [])
            return
        # column titles render as HTML (cells do not): runs' names head the params' columns
        titles = {column: esc(column) for column in frame.columns}
        self.table = pn.widgets.Tabulator(
            frame, hidden_columns=hidden or [], titles=titles, **self.options
        )
        self.holder[:] = [self.table]


def _ignore_event(react: Callable[[], None], event: Any) -> None:
    react()


class ComparePage(Page):
    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(state, **params)
        self.vm = CompareViewModel(state)
        self._loads = 0  # curve reads started; only the latest one draws
        # the first visit with a model in use starts from its latest runs, not a blank page
        self.preselect_latest = False
        self.message = pn.pane.HTML("", sizing_mode="stretch_width")
        self.models = pn.widgets.MultiChoice(label="Models (all if empty)", options={}, width=260)
        self.status = pn.widgets.Select(label="Status", options=STATUSES, width=130)
        self.tag = pn.widgets.TextInput(label="Tag", placeholder="key=value", width=150)
        self.runs = pn.widgets.MultiChoice(
            label="Runs to compare", options={}, sizing_mode="stretch_width", min_width=300
        )
        self.metrics = pn.widgets.MultiChoice(
            label="Metrics", options=["loss/total"], value=["loss/total"], width=340
        )
        self.x_axis = pn.widgets.RadioButtonGroup(
            options={v: k for k, v in X_AXES.items()}, value="step", color="light"
        )
        self.smoothing = pn.widgets.FloatSlider(
            label="Smoothing", start=0, end=0.99, step=0.01, value=0.0, width=160
        )
        self.log_scale = pn.widgets.Checkbox(label="Log scale", align="end")
        self.only_differing = pn.widgets.Checkbox.from_param(
            self.vm.param.only_differing, label="Only params that differ"
        )
        self.plot = pn.pane.Bokeh(None, sizing_mode="stretch_width", height=360, visible=False)
        self.figures = FrameTable(
            height=200,
            formatters={"MLflow": {"type": "link", "labelField": "open", "target": "_blank"}},
        )
        self.params = FrameTable(height=260)
        self.csv = pn.widgets.FileDownload(
            callback=self._csv, filename="compare.csv", label="Curves as CSV",
            color="light", width=140, align="end",
        )  # fmt: skip
        # a finished run's logged model into MLflow's Model Registry, from here too
        self.register_run = pn.widgets.Select(label="Register the model of", options={}, width=300)
        self.alias = pn.widgets.TextInput(label="Alias", value="champion", width=110)
        self.register_button = pn.widgets.Button(label="Register model", align="end")
        self.register_button.on_click(lambda e: self._register())
        self.register_row = pn.Row(
            self.register_run, self.alias, self.register_button, visible=False,
            styles={"flex-wrap": "wrap", "align-items": "end"},
        )  # fmt: skip
        watched: list[tuple[Any, Callable[[], None]]] = [
            (self.models, self._find), (self.status, self._find), (self.tag, self._find),
            (self.runs, self._runs_changed),
            (self.metrics, self._load), (self.x_axis, self._load),
            (self.smoothing, self._draw), (self.log_scale, self._draw),
        ]  # fmt: skip
        for widget, react in watched:
            widget.param.watch(functools.partial(_ignore_event, react), "value")
        self.only_differing.param.watch(lambda e: self._tables(), "value")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.HTML("<h2 style='margin:4px 0'>Compare runs</h2>"),
            pn.Row(self.models, self.status, self.tag, styles={"flex-wrap": "wrap"}),
            self.runs,
            pn.Row(self.metrics, self.x_axis, self.smoothing, self.log_scale, pn.HSpacer(),
                   self.csv, sizing_mode="stretch_width",
                   styles={"flex-wrap": "wrap", "align-items": "end"}),
            self.message,
            self.plot,
            pn.pane.HTML("<h3 class='al-h'>Final and best figures, labels used</h3>"),
            self.figures,
            self.register_row,
            pn.Row(pn.pane.HTML("<h3 class='al-h'>Parameters</h3>"), self.only_differing),
            self.params,
            sizing_mode="stretch_width",
        )  # fmt: skip

    def shown(self) -> None:
        try:
            self.models.options = picker_options(self.vm.models())
            if self.state.model_id and not self.models.value:
                self.preselect_latest = not self.runs.value
                self.models.value = [self.state.model_id]  # start from the model in use
            else:
                self._find()
        except Exception as exc:
            self._say(describe_error(exc))

    # --- picking runs -------------------------------------------------------------------------

    def _find(self) -> None:
        self.vm.param.update(
            model_filter=list(self.models.value),
            status_filter=self.status.value or "",
            tag_filter=self.tag.value or "",
        )
        try:
            found = self.vm.find_runs()
        except ValueError as exc:
            self._say(str(exc))
            return
        options: dict[str, str] = {}
        for c in found:
            # two runs may share a name: the run id tells them apart
            label = c.label if c.label not in options else f"{c.label} ({c.summary.run_id[:8]})"
            options[label] = c.summary.run_id
        # runs already chosen stay chosen, even when a filter hides them from the list
        for run_id in self.runs.value:
            candidate = self.vm.candidate(run_id)
            options.setdefault(candidate.label, run_id)
        self.runs.options = picker_options(options)
        if not found:
            self._say("No runs match: widen the filters or train a model first.")
        elif self.preselect_latest:
            self.preselect_latest = False
            self.runs.value = [c.summary.run_id for c in found[:PRESELECTED_RUNS]]
        elif not self.runs.value:
            self._say(PICK_RUNS)
        else:
            self._say("")

    def _show_registrable(self) -> None:
        try:
            options = self.vm.registrable()
        except Exception:  # the row is an extra; the comparison itself reports errors
            log.warning("Could not list the runs to register", exc_info=True)
            options = {}
        chosen = self.register_run.value if self.register_run.value in options.values() else None
        first = next(iter(options.values()), None)
        self.register_run.param.update(options=options, value=chosen or first)
        self.register_row.visible = bool(options)

    def _register(self) -> None:
        run_id = self.register_run.value
        if not run_id:
            return
        self.register_button.disabled = True
        self._say("Registering the model…")

        def done(made: Any) -> None:
            self.register_button.disabled = False
            self._say(f"Registered {made.name!r} version {made.version} as {made.uri}.")

        def failed(exc: BaseException) -> None:
            self.register_button.disabled = False
            self._say(describe_error(exc))

        alias = self.alias.value or ""
        self.ui.background(lambda: self.vm.register(run_id, alias), done=done, failed=failed)

    def _runs_changed(self) -> None:
        self.vm.selected = list(self.runs.value)
        self._show_registrable()
        self._say("" if self.runs.value else PICK_RUNS)
        keys = self.vm.metric_keys()
        chosen = [m for m in self.metrics.value if m in keys] or (
            ["loss/total"] if "loss/total" in keys else keys[:1]
        )
        self.metrics.param.update(options=keys or ["loss/total"], value=chosen)
        self._load()

    # --- curves -------------------------------------------------------------------------------

    def _load(self) -> None:
        self.vm.param.update(metrics=list(self.metrics.value), x_axis=self.x_axis.value)
        self._loads += 1
        this_load = self._loads
        if not self.vm.selected or not self.vm.metrics:  # nothing to read: clear at once

            def clear() -> None:
                self.vm.curves = []
                self._draw()
                self._tables()

            # through the UI thread, like a read's result: where results apply in their own
            # threads (no session: a script, a test) this waits for one being applied, instead
            # of changing the plot under it (CI saw the pane draw a plot it had just cleared)
            self.ui.call(clear)
            return

        def done(_: Any) -> None:
            if this_load != self._loads:
                return  # the selection changed while this read ran: a newer one draws
            self._draw()
            self._tables()

        def failed(exc: BaseException) -> None:
            self._say(describe_error(exc))

        self.ui.background(self.vm.load_curves, done=done, failed=failed)

    def _draw(self) -> None:
        curves = self.vm.curves
        if not curves:
            self.plot.param.update(object=None, visible=False)
            return
        plot = figure(
            height=360, sizing_mode="stretch_width", name="compare-plot",
            y_axis_type="log" if self.log_scale.value else "linear",
            tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above",
        )  # fmt: skip
        plot.xaxis.axis_label = X_AXES[self.vm.x_axis]
        run_colors = {run_id: Category10_10[i % 10] for i, run_id in enumerate(self.vm.selected)}
        metric_dashes = {m: DASHES[i % len(DASHES)] for i, m in enumerate(self.vm.metrics)}
        renderers: list[Any] = []  # (Bokeh's HoverTool wants DataRenderers)
        items: list[tuple[str, list[Any]]] = []
        for curve in curves:
            values = smooth(list(curve.y), self.smoothing.value or 0.0)
            line = plot.line(
                x=curve.x,
                y=values,
                color=run_colors.get(curve.run_id, "#333"),
                line_dash=metric_dashes.get(curve.metric, "solid"),
                line_width=2,
                name=curve.metric,
            )
            renderers.append(line)
            items.append((f"{curve.label} · {curve.metric}", [line]))
        plot.add_tools(
            HoverTool(
                renderers=renderers,
                tooltips=[("metric", "$name"), ("x", "$x{0.[00]}"), ("value", "$y{0.[0000]}")],
            )
        )
        # below the plot, not over the curves nor beside them (long run names beside a plot
        # leave it no width on a phone); the figure grows by the legend's height so the
        # curves keep theirs. A click on an entry hides its curve.
        legend = Legend(items=items, click_policy="hide", label_text_font_size="11px", spacing=0)
        plot.add_layout(legend, "below")
        height = PLOT_HEIGHT + LEGEND_LINE_PX * len(items)
        plot.height = height
        self.plot.param.update(object=plot, visible=True, height=height)

    def _tables(self) -> None:
        figures = self.vm.figures_table()
        hidden: list[str] = []
        if not figures.empty:
            figures["MLflow"] = [self.vm.run_url(r) or "" for r in figures["run_id"]]
            figures["open"] = ["open ↗" if u else "" for u in figures["MLflow"]]
            hidden = ["run_id", "open"] + ([] if figures["MLflow"].any() else ["MLflow"])
        self.figures.set_frame(figures.round(5) if not figures.empty else figures, hidden)
        self.params.set_frame(self.vm.params_table())

    def _say(self, text: str) -> None:
        self.message.object = f"<p class='al-muted'>{esc(text)}</p>" if text else ""

    def _csv(self) -> io.StringIO:
        out = io.StringIO()
        self.vm.curves_frame().to_csv(out, index=False)
        out.seek(0)
        return out
