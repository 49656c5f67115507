"""Evaluate: per-task metrics of a run's checkpoint (rated good / moderate / poor by each task's
own thresholds) with their recent trend, originals beside reconstructions, the network's
layers, and analyzers. Evaluations and analyzer results are logged to MLflow."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import numpy as np
import panel as pn

from activelab.panel_app.pages.common import Page, duration, error_banner, esc, fmt
from activelab.panel_app.pages.label import png
from activelab.panel_app.vm.evaluate import EvaluateViewModel
from activelab.panel_app.vm.home import describe_error
from activelab.panel_app.vm.state import AppState

log = logging.getLogger(__name__)

RATING_STYLE = {
    "good": "background:#ebfbee;color:#2b8a3e",
    "moderate": "background:#fff9db;color:#e67700",
    "poor": "background:#fff5f5;color:#c92a2a",
    "": "",
}


def grid_image(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """One (C, H, W) picture of rows of (samples, kinds, C, H, W): each sample's original,
    reconstruction (and difference) side by side, a wider gap between samples."""
    _samples, kinds, channels, height, width = rows[0].shape
    columns = max(r.shape[0] for r in rows)
    cell = kinds * width + (kinds - 1) * gap
    out = np.ones(
        (channels, len(rows) * (height + 2 * gap), columns * (cell + 4 * gap)), dtype=np.float32
    )
    for r, row in enumerate(rows):
        top = r * (height + 2 * gap)
        for s in range(row.shape[0]):
            for k in range(kinds):
                left = s * (cell + 4 * gap) + k * (width + gap)
                out[:, top : top + height, left : left + width] = np.clip(row[s, k], 0, 1)
    return out


def table_html(
    headers: list[str], rows: list[list[str]], styles: list[list[str]] | None = None
) -> str:
    styles = styles or [[""] * len(r) for r in rows]
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td style='padding:2px 10px;{style}'>{esc(cell)}</td>"
            for cell, style in zip(row, style_row, strict=True)
        )
        + "</tr>"
        for row, style_row in zip(rows, styles, strict=True)
    )
    return f"<table class='al-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def heat_styles(frame: Any) -> list[list[str]] | None:
    """Cell shades for a table of counts or shares (a confusion matrix: the diagonal stands
    out): each number against the table's largest; None when the cells are not numbers."""
    import numpy as np

    values = frame.iloc[:, 1:]
    numeric = values.apply(lambda column: column.dtype.kind in "iuf").all()
    if values.empty or not numeric:
        return None
    cells = values.to_numpy(dtype=float)
    top = float(np.nanmax(np.abs(cells))) if np.isfinite(cells).any() else 0.0
    styles = []
    for row in cells:
        shades = [""]
        for value in row:
            share = abs(value) / top if top and np.isfinite(value) else 0.0
            text = "color:white;" if share > 0.55 else ""
            shades.append(f"background:rgba(28,126,214,{0.08 + 0.85 * share:.2f});{text}")
        styles.append(shades)
    return styles


SAMPLE_PX = 72  # a sample's picture in the originals and reconstructions grid
PLUGIN_WATCH_MS = 1000  # a cheap counter compare: analyzers dropped in show up within a second


def eta_text(elapsed_s: float, done: int, total: int) -> str:
    """ " · about 12 s left" once something is done (nothing before: no basis to guess)."""
    if done <= 0 or done >= total:
        return ""
    return f" · about {duration(elapsed_s / done * (total - done))} left"


class EvaluatePage(Page):
    poll_ms = PLUGIN_WATCH_MS

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(state, **params)
        self.vm = EvaluateViewModel(state)
        self._loaded_model = ""
        self._plugins_seen = -1
        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        self.run = pn.widgets.Select(label="Run", options={}, width=320)
        self.checkpoint = pn.widgets.Select(label="Checkpoint", options={}, width=200)
        self.evaluate_button = pn.widgets.Button(
            label="Evaluate checkpoint", color="primary", align="end"
        )
        self.link = pn.pane.HTML("", align="end")
        self.metrics = pn.pane.HTML("", sizing_mode="stretch_width")
        self.trend = pn.pane.HTML("", sizing_mode="stretch_width")
        self.grid = pn.pane.PNG(None, visible=False)
        self.grid_note = pn.pane.HTML("", sizing_mode="stretch_width")
        self.refresh_grid = pn.widgets.Button(label="Other samples")
        self.difference = pn.widgets.Checkbox(label="Show the difference", align="center")
        self.summary = pn.pane.HTML("", sizing_mode="stretch_width")
        self.analyzer = pn.widgets.Select(label="Analyzer", options={}, width=420)
        self.analyze_button = pn.widgets.Button(label="Run analyzer", align="end")
        self.analysis = pn.pane.HTML("", sizing_mode="stretch_width")
        self.analysis_progress = pn.indicators.Progress(
            value=0, max=100, width=320, visible=False, bar_color="primary"
        )
        self.run.param.watch(self._run_picked, "value")
        self.checkpoint.param.watch(self._checkpoint_picked, "value")
        self.evaluate_button.on_click(lambda e: self._evaluate())
        self.refresh_grid.on_click(lambda e: self._new_samples())
        self.difference.param.watch(lambda e: self._show_grid(), "value")
        self.analyze_button.on_click(lambda e: self._analyze())
        self._busy_picking = False

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.HTML("<h2 style='margin:4px 0'>Evaluate</h2>"),
            self.status,
            pn.Row(
                self.run,
                self.checkpoint,
                self.evaluate_button,
                self.link,
                styles={"flex-wrap": "wrap"},
            ),
            pn.Row(
                pn.Column(
                    pn.pane.HTML("<h3 class='al-h'>Metrics per task</h3>"), self.metrics, width=460
                ),
                pn.Column(
                    pn.pane.HTML("<h3 class='al-h'>Last evaluations</h3>"),
                    self.trend,
                    sizing_mode="stretch_width",
                ),
                styles={"flex-wrap": "wrap", "gap": "18px"},
                sizing_mode="stretch_width",
            ),
            pn.Row(
                pn.pane.HTML("<h3 class='al-h'>Originals and reconstructions</h3>"),
                self.refresh_grid,
                self.difference,
            ),
            self.grid_note,
            self.grid,
            pn.Row(
                pn.pane.HTML("<h3 class='al-h'>Analyzers</h3>"),
                self.analyzer,
                self.analyze_button,
                styles={"align-items": "end"},
            ),
            self.analysis_progress,
            self.analysis,
            pn.pane.HTML("<h3 class='al-h'>Model summary</h3>"),
            self.summary,
            sizing_mode="stretch_width",
        )

    # --- page life ----------------------------------------------------------------------------

    def shown(self) -> None:
        model_id = self.state.model_id
        if not model_id:
            self.status.object = (
                "<div class='al-empty'><p>Pick a model on the Home page to evaluate it.</p></div>"
            )
        elif model_id != self._loaded_model:
            self._load(model_id)

    def model_changed(self) -> None:
        if self.state.model_id and self.state.model_id != self._loaded_model:
            self._load(self.state.model_id)

    def _refresh_analyzers(self) -> None:
        """List every registered analyzer (a file dropped into a task folder adds one)."""
        self._plugins_seen = self.vm.lab.plugins.generation
        self.analyzer.options = {
            f"{k} — {v}" if v else k: k for k, v in self.vm.analyzers().items()
        }
        if self.analyzer.value not in self.analyzer.options.values() and self.analyzer.options:
            self.analyzer.value = next(iter(self.analyzer.options.values()))

    def poll(self) -> None:
        """An analyzer dropped into a task folder shows up in the picker."""
        if self._loaded_model and self.vm.lab.plugins.generation != self._plugins_seen:
            self._refresh_analyzers()

    def _load(self, model_id: str) -> None:
        self._loaded_model = model_id
        try:
            runs = self.vm.load(model_id)
            self._refresh_analyzers()
        except Exception as exc:
            self.status.object = error_banner(exc)
            return
        if not runs:
            self.status.object = (
                "<div class='al-empty'><p>No run with a checkpoint yet: train the model on "
                "the Train page first.</p></div>"
            )
        else:
            self.status.object = ""
        self._busy_picking = True
        try:
            self.run.param.update(
                options={r.name: r.run_id for r in runs}, value=self.vm.run_id or None
            )
        finally:
            self._busy_picking = False
        self._show_run()

    def _run_picked(self, event: Any) -> None:
        if self._busy_picking or not event.new or event.new == self.vm.run_id:
            return
        self.vm.param.update(run_id=event.new, checkpoint="")
        self._show_run()

    def _checkpoint_picked(self, event: Any) -> None:
        if self._busy_picking:
            return
        self.vm.checkpoint = event.new or ""
        self._show_grid()
        self._show_summary()

    def _show_run(self) -> None:
        """Checkpoints, the last evaluations, the grid and the summary of the chosen run."""
        if not self.vm.run_id:
            return
        url = self.vm.run_url()
        self.link.object = (
            f"<a href='{esc(url)}' target='_blank' rel='noopener'>Open in MLflow ↗</a>"
            if url
            else ""
        )
        self._busy_picking = True
        try:
            checkpoints = self.vm.checkpoints()
            self.checkpoint.param.update(
                options={p.rsplit("/", 1)[-1]: p for p in reversed(checkpoints)},
                value=checkpoints[-1] if checkpoints else None,
            )
            self.vm.checkpoint = self.checkpoint.value or ""
        finally:
            self._busy_picking = False
        history = self.vm.history()
        self._show_metrics(history[0] if history else None)
        self._show_trend(history)
        self._show_grid()
        self._show_summary()

    # --- evaluation ---------------------------------------------------------------------------

    def _evaluate(self) -> None:
        self.evaluate_button.disabled = True
        self.metrics.object = "<p class='al-muted'>Evaluating…</p>"

        def done(evaluation: Any) -> None:
            self.evaluate_button.disabled = False
            self._show_metrics(evaluation)
            self._show_trend(self.vm.history())
            self.state.notify("Evaluation logged to MLflow.", "success")

        def failed(exc: BaseException) -> None:
            self.evaluate_button.disabled = False
            self.metrics.object = error_banner(exc)

        self.ui.background(self.vm.evaluate, done=done, failed=failed)

    def _show_metrics(self, evaluation: Any) -> None:
        if evaluation is None:
            self.metrics.object = (
                "<p class='al-muted'>Not evaluated yet: press <b>Evaluate checkpoint</b>.</p>"
            )
            return
        # a figure no task sets a target for is information, not a grade
        rows = [[r.task, r.metric, fmt(r.value), r.rating or "no target"] for r in evaluation.rows]
        styles = [
            ["", "", RATING_STYLE[r.rating], RATING_STYLE[r.rating] or "color:#868e96"]
            for r in evaluation.rows
        ]
        self.metrics.object = (
            f"<p class='al-muted'>{esc(evaluation.checkpoint.rsplit('/', 1)[-1])}</p>"
            + table_html(["task", "metric", "value", "rating"], rows, styles)
        )

    def _show_trend(self, history: list[Any]) -> None:
        if len(history) < 2:  # one evaluation is the table beside it: nothing to compare yet
            self.trend.object = (
                "<p class='al-muted'>No evaluations yet.</p>"
                if not history
                else "<p class='al-muted'>One evaluation so far: the next one shows the trend "
                "here.</p>"
            )
            return
        ordered = list(reversed(history))  # oldest first, left to right
        keys = sorted({(r.task, r.metric) for e in ordered for r in e.rows})
        headers = ["task", "metric"] + [
            f"{e.checkpoint.rsplit('/', 1)[-1]} · {e.when.astimezone():%H:%M:%S}" if e.when else ""
            for e in ordered
        ]
        rows, styles = [], []
        for task, metric in keys:
            row, style = [task, metric], ["", ""]
            for e in ordered:
                found = next((r for r in e.rows if (r.task, r.metric) == (task, metric)), None)
                row.append(fmt(found.value) if found else "—")
                style.append(RATING_STYLE[found.rating] if found else "")
            rows.append(row)
            styles.append(style)
        self.trend.object = table_html(headers, rows, styles)

    # --- reconstructions and summary ----------------------------------------------------------

    def _new_samples(self) -> None:
        self.vm.seed += 1
        self._show_grid()

    def _show_grid(self) -> None:
        if not self.vm.run_id:
            return
        self.vm.difference = self.difference.value
        self.grid_note.object = "<p class='al-muted'>Reconstructing…</p>"

        def done(result: Any) -> None:
            names, rows = result
            picture = grid_image(rows)
            # whole-number upscaling, at most ~1100 px wide; the pane gets the exact size
            # each sample about 72 px (an 8x8 digit x9, a 28x28 image x2-3), the grid <= 1100
            side = max(1, rows[0].shape[-1])
            scale = max(1, min(-(-SAMPLE_PX // side), 1100 // picture.shape[-1]))
            kinds = "original | reconstruction" + (" | difference" if self.vm.difference else "")
            self.grid.param.update(
                object=png(picture, scale),
                width=picture.shape[-1] * scale,
                height=picture.shape[-2] * scale,
                visible=True,
            )
            self.grid_note.object = (
                f"<p class='al-muted'>Rows: {esc(', '.join(names))}. Each sample: {kinds}. "
                f"Samples drawn with seed {self.vm.seed}.</p>"
            )

        def failed(exc: BaseException) -> None:
            self.grid.visible = False
            self.grid_note.object = error_banner(exc)

        self.ui.background(self.vm.reconstruction_grid, done=done, failed=failed)

    def _show_summary(self) -> None:
        if not self.vm.run_id:
            return

        def done(text: str) -> None:
            self.summary.object = f"<pre style='font-size:12px'>{esc(text)}</pre>"

        def failed(exc: BaseException) -> None:
            self.summary.object = f"<p class='al-muted'>{esc(describe_error(exc))}</p>"

        self.ui.background(self.vm.model_summary, done=done, failed=failed)

    # --- analyzers ------------------------------------------------------------------------------

    def _analyze(self) -> None:
        kind = self.analyzer.value
        if not kind or not self.vm.run_id:
            return
        self.analysis.object = "<p class='al-muted'>Running…</p>"
        started = time.monotonic()

        def show(done: int, total: int, what: str) -> None:  # from the analyzer's thread
            def apply() -> None:
                self.analysis_progress.param.update(
                    value=int(100 * done / max(total, 1)), visible=True
                )
                self.analysis.object = (
                    f"<p class='al-muted'>{esc(what)} · {done} of {total} done"
                    f"{eta_text(time.monotonic() - started, done, total)}</p>"
                )

            self.ui.call(apply)

        def done(result: Any) -> None:
            self.analysis_progress.visible = False
            table = result.table
            body = ""
            if table is not None:
                frame = table.reset_index()
                body = table_html(
                    [str(c) for c in frame.columns],
                    [
                        [fmt(v) if isinstance(v, float) else str(v) for v in row]
                        for row in frame.values
                    ],
                    heat_styles(frame),
                )
            image = result.png()
            if image is not None:
                picture = base64.b64encode(image).decode()
                body = (
                    f"<img class='al-analysis-image' alt='{esc(result.title)}' "
                    f"src='data:image/png;base64,{picture}'>{body}"
                )
            logged = [ext for ext, made in ((".csv", table is not None), (".png", image)) if made]
            self.analysis.object = (
                f"<h4 style='margin:6px 0'>{esc(result.title)}</h4>"
                f"<p class='al-muted'>{esc(result.note)} Logged to the run as "
                f"analyzers/{esc(kind)}{' / '.join([*logged, '.html'])}.</p>{body}"
            )

        def failed(exc: BaseException) -> None:
            self.analysis_progress.visible = False
            self.analysis.object = error_banner(exc)

        self.ui.background(lambda: self.vm.analyze(kind, show), done=done, failed=failed)
