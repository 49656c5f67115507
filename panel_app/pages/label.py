"""Label: the latent-space map (plain Bokeh: 60,000 points stay fluid), detail and actions.

The scatter is built once per model and then only patched: a label change sends the changed
points (DESIGN: patching one point ~1 ms vs ~470 ms to replace a HoloViews pane).
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import time
from typing import Any

import numpy as np
import panel as pn
from bokeh.events import RangesUpdate
from bokeh.models import (
    BoxSelectTool,
    ColumnDataSource,
    CustomJS,
    CustomJSHover,
    HoverTool,
    LassoSelectTool,
    LinearColorMapper,
    Range1d,
)
from bokeh.palettes import Category10_10, Category20_20, Turbo256, Viridis256
from bokeh.plotting import figure

from activelab.panel_app.pages import map_raster
from activelab.panel_app.pages.common import Page, error_banner, esc, fmt, note
from activelab.panel_app.vm.home import describe_error
from activelab.panel_app.vm.label import COLOR_MODES, GALLERY_ORDERS, LabelViewModel
from activelab.panel_app.vm.state import AppState
from activelab.panel_app.widgets import KeyListener

log = logging.getLogger(__name__)

UNLABELED_COLOR = "#cfd4da"
POLL_MS = 1000  # labels from other people reach this map within about a second
CLICK_RADIUS_PX = 8  # a click this close to a point picks it

# The browser never repaints the 60,000 samples for a selection or a label: they are drawn once
# as an image (map_raster) under a scatter that is not drawn (hover only), and what changes —
# the picked samples, the labeled ones — is drawn in small layers on Bokeh's "overlay" level,
# which repaints without the rest of the plot (PlotView paints the primary canvas only when a
# renderer of another level changed). So picking is done here, in the browser, from the
# samples' coordinates, into `picks.selected.indices` (a source no renderer draws, so a new
# selection repaints nothing big); the server answers with the overlay layers and side panel.

# A click picks the one sample nearest to it on screen (Bokeh's tap tool would select every
# point under the cursor, and one key would then label a whole stack); shift adds or removes.
NEAREST_ON_CLICK = """
const data = source.data, xs = data.x, ys = data.y;
const w = plot.inner_width, h = plot.inner_height;
const kx = w / (plot.x_range.end - plot.x_range.start);
const ky = h / (plot.y_range.end - plot.y_range.start);
let best = -1, bestD = radius * radius + 1e-9;
for (let i = 0; i < xs.length; i++) {
  const dx = (xs[i] - cb_obj.x) * kx, dy = (ys[i] - cb_obj.y) * ky;
  const d = dx * dx + dy * dy;
  if (d < bestD) { best = i; bestD = d; }
}
const shift = cb_obj.modifiers && cb_obj.modifiers.shift;
let picked = [];
if (shift) {
  picked = [...picks.selected.indices];
  if (best >= 0) {
    const at = picked.indexOf(best);
    if (at >= 0) picked.splice(at, 1); else picked.push(best);
  }
} else if (best >= 0) {
  picked = [best];
}
picks.selected.indices = picked;
"""

LABEL_OF_HOVERED = (
    "const v = labels.data.label[special_vars.index]; return v >= 0 ? names[v] : '—';"
)

# A drag's modifier keys, kept for the box or lasso that ends it (Bokeh's selection-geometry
# event does not carry them).
KEEP_DRAG_MODIFIERS = "picks._drag_modifiers = cb_obj.modifiers || {};"

# A finished box or lasso picks the samples inside it, combined with the current selection
# as Bokeh's select tools do: the tool's mode, or shift appends, ctrl intersects, both subtract.
PICK_IN_REGION = """
if (!cb_obj.final) return;
const g = cb_obj.geometry, xs = source.data.x, ys = source.data.y, n = xs.length;
const hits = [];
if (g.type === "rect") {
  const x0 = Math.min(g.x0, g.x1), x1 = Math.max(g.x0, g.x1);
  const y0 = Math.min(g.y0, g.y1), y1 = Math.max(g.y0, g.y1);
  for (let i = 0; i < n; i++)
    if (xs[i] >= x0 && xs[i] <= x1 && ys[i] >= y0 && ys[i] <= y1) hits.push(i);
} else if (g.type === "poly") {
  const px = g.x, py = g.y, m = px.length;
  const x0 = Math.min(...px), x1 = Math.max(...px), y0 = Math.min(...py), y1 = Math.max(...py);
  for (let i = 0; i < n; i++) {
    const x = xs[i], y = ys[i];
    if (x < x0 || x > x1 || y < y0 || y > y1) continue;
    let inside = false;
    for (let a = 0, b = m - 1; a < m; b = a++)
      if ((py[a] > y) !== (py[b] > y) &&
          x < (px[b] - px[a]) * (y - py[a]) / (py[b] - py[a]) + px[a]) inside = !inside;
    if (inside) hits.push(i);
  }
} else {
  return;
}
const mods = picks._drag_modifiers || {};
const tool = plot.toolbar.active_drag;
let mode = (tool && tool.mode) || "replace";
if (mods.shift && !mods.ctrl) mode = "append";
else if (!mods.shift && mods.ctrl) mode = "intersect";
else if (mods.shift && mods.ctrl) mode = "subtract";
const before = new Set(picks.selected.indices), hit = new Set(hits);
let picked;
if (mode === "append") picked = [...before, ...hits.filter((i) => !before.has(i))];
else if (mode === "intersect") picked = [...before].filter((i) => hit.has(i));
else if (mode === "subtract") picked = [...before].filter((i) => !hit.has(i));
else if (mode === "xor")
  picked = [...[...before].filter((i) => !hit.has(i)), ...hits.filter((i) => !before.has(i))];
else picked = hits;
picks.selected.indices = picked;
"""


def class_palette(count: int) -> list[str]:
    if count <= 10:
        return list(Category10_10[:count])
    if count <= 20:
        return list(Category20_20[:count])
    step = len(Turbo256) / count
    return [Turbo256[int(i * step)] for i in range(count)]


def png(image: np.ndarray, scale: int) -> bytes:
    """A (C, H, W) image in [0, 1] as PNG bytes, upscaled without smoothing."""
    from PIL import Image

    array = np.clip(image, 0, 1)
    array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    picture = Image.fromarray((array * 255).astype(np.uint8))
    picture = picture.resize(
        (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# On a phone the legend wraps below the map: the map's rows grow with it (instead of the
# legend spilling over the class buttons) and the legend takes the full width (170 px beside
# the map elsewhere).
PHONE_GROWS = (
    "@media (max-width: 600px) { :host { height: auto !important; flex: none !important } }"
)
QUEUE_FIRST_ON_A_PHONE = "@media (max-width: 600px) { :host(.al-queue) { order: -1 } }"
LEGEND_WIDTH = (
    ":host { width: 170px; flex: 0 0 170px } "
    "@media (max-width: 600px) { :host { width: 100%; flex: 1 1 100%; min-width: 0 } }"
)


class LabelPage(Page):
    poll_ms = POLL_MS

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(state, **params)
        self.vm = LabelViewModel(state)
        self._polling = False  # a poll's reads are under way
        self._loaded_model = ""
        self.source: ColumnDataSource | None = None  # every sample (picking, hover, colours)
        self.renderer: Any = None  # not drawn: hover over the image
        self.label_state: ColumnDataSource | None = None  # every sample's label, patched
        self.picks: ColumnDataSource | None = None  # its `selected`: the browser's picks
        self.selected_source: ColumnDataSource | None = None  # the picked samples, drawn
        self.selected_renderer: Any = None
        # the samples drawn as one image (map_raster), and the labeled ones above it
        self.raster_source: ColumnDataSource | None = None
        self.raster_mapper: LinearColorMapper | None = None
        self.labeled_source: ColumnDataSource | None = None
        self.labeled_renderer: Any = None
        self.view: map_raster.View | None = None
        self._raster_serial = 0
        self._plot_px: dict[str, int] = {}  # the plot's data area, as the browser laid it out
        self.map_pane: Any = None
        self._images_for: tuple[int, str] | None = None
        self._picker_busy = False

        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        # what to do when the map does not help yet
        self.advice = pn.pane.HTML("", sizing_mode="stretch_width", visible=False)
        # widgets bound to the view-model's parameters (both ways)
        self.color_by = pn.widgets.RadioButtonGroup.from_param(
            self.vm.param.color_by, label="",
            options={v: k for k, v in COLOR_MODES.items()}, color="light",
        )  # fmt: skip
        self.strategy = pn.widgets.Select.from_param(self.vm.param.strategy, label="", width=160)
        self.next_count = pn.widgets.IntInput.from_param(
            self.vm.param.next_count, label="", width=70
        )
        self.next_button = pn.widgets.Button(label="Next to label", color="primary")
        self.next_button.on_click(lambda e: self._next())
        # one sample at a time (Label Studio's flow): keys label it and move on
        self.queue_button = pn.widgets.Button(label="Label one by one (Q)", color="light")
        self.queue_button.on_click(lambda e: self._toggle_queue())
        # (on a phone the map takes the full width; its legend goes below it)
        self.plot_area = pn.Column(
            sizing_mode="stretch_both", min_height=460, css_classes=["al-map"]
        )
        self.legend = pn.pane.HTML("", css_classes=["al-legend"], stylesheets=[LEGEND_WIDTH])
        self._classes: list[str] = []  # the classes the map's colours were built for
        self.detail = pn.pane.HTML("", sizing_mode="stretch_width")
        self.image = pn.pane.PNG(None, width=112, height=112, visible=False)
        # what each picture is: the sample as the data set has it, and as the model redraws it
        self.image_caption = pn.pane.HTML(
            "<span class='al-caption'>sample</span>", visible=False, margin=(0, 10, -6, 10)
        )
        self.recon_caption = pn.pane.HTML(
            "<span class='al-caption'>model's reconstruction</span>", visible=False,
            margin=(0, 10, -6, 10),
        )  # fmt: skip
        self.recon = pn.pane.PNG(None, width=112, height=112, visible=False)
        captioned = ((self.image, self.image_caption), (self.recon, self.recon_caption))
        for picture, caption in captioned:
            picture.param.watch(
                lambda event, caption=caption: setattr(caption, "visible", event.new), "visible"
            )
        # A FlexBox of the side panel's width wraps the buttons inside it (a wrapping Row
        # takes the page's width and pushes buttons off to the right).
        self.class_buttons = pn.FlexBox(gap="4px", sizing_mode="stretch_width")
        self.clear_button = pn.widgets.Button(label="Clear label")
        self.undo_button = pn.widgets.Button(label="Undo", disabled=True)
        self.redo_button = pn.widgets.Button(label="Redo", disabled=True)
        self.clear_button.on_click(lambda e: self._act(self.vm.clear_selection, "cleared"))
        self.undo_button.on_click(lambda e: self._act(self.vm.undo, "undone"))
        self.redo_button.on_click(lambda e: self._act(self.vm.redo, "redone"))
        self.export_csv = pn.widgets.FileDownload(
            callback=self._labels_csv, filename="labels.csv", label="Export CSV",
            color="light", width=110,
        )  # fmt: skip
        # wide enough for the browser's "Choose File  No file chosen" in full
        self.import_csv = pn.widgets.FileInput(accept=".csv", multiple=False, width=250)
        self.import_csv.param.watch(self._import_csv, "value")
        self.selection_info = pn.pane.HTML("", sizing_mode="stretch_width")
        # the selection as thumbnails (a box, a lasso, "Next to label"); keys label all of it
        self.gallery = pn.pane.HTML("", sizing_mode="stretch_width")
        self.gallery_order = pn.widgets.Select.from_param(
            self.vm.param.gallery_order, label="Sort the selection",
            options={v: k for k, v in GALLERY_ORDERS.items()}, width=200,
        )  # fmt: skip
        self.stats = pn.pane.HTML("", sizing_mode="stretch_width")
        self.saved = pn.pane.HTML("", sizing_mode="stretch_width")
        self.model_picker = pn.widgets.Select(label="Model", options={}, width=260)
        self.model_picker.param.watch(self._picked, "value")
        self.keys = KeyListener()
        # a key press arrives without the document lock (see KeyListener): handled on the
        # session's next tick, which holds it
        self.keys.param.watch(lambda event: self.ui.next_tick(self._key), "presses")

        self.vm.param.watch(lambda *e: self.ui.call(self._rebuild_map), "map_version")
        self.vm.param.watch(lambda *e: self.ui.call(self._patch_labels), "labels_version")
        self.vm.param.watch(lambda *e: self.ui.call(self._recolor), "color_by")
        self.vm.param.watch(
            lambda *e: self.ui.call(self._selection_changed), ["selected", "current"]
        )
        # the map's source changes when a newer run's map replaces it (Quick start, training)
        self.vm.param.watch(
            lambda *e: self.ui.call(self._status), ["status", "ready", "source_run_name"]
        )
        self.vm.param.watch(lambda *e: self.ui.call(self._history), ["can_undo", "can_redo"])
        self.vm.param.watch(lambda *e: self.ui.call(self._render_gallery), "gallery_order")

    # --- layout -------------------------------------------------------------------------------

    def __panel__(self) -> pn.viewable.Viewable:
        toolbar = pn.Row(
            self.color_by,
            pn.Spacer(width=16),
            self.strategy,
            self.next_count,
            self.next_button,
            self.queue_button,
            styles={"flex-wrap": "wrap", "align-items": "center"},
            sizing_mode="stretch_width",
        )
        self.side = pn.Column(
            # here, not above or below the map: when it appears (after the map is drawn) the
            # map keeps its size and place
            self.advice,
            pn.Row(
                pn.Column(self.image_caption, self.image),
                pn.Column(self.recon_caption, self.recon),
            ),
            self.detail,
            pn.Column(self.class_buttons, width=330),
            pn.Row(self.clear_button, self.undo_button, self.redo_button),
            self.saved,
            self.selection_info,
            self.gallery_order,
            self.gallery,
            pn.pane.HTML("<h4 style='margin:10px 0 2px'>Labels per class</h4>"),
            self.stats,
            pn.pane.HTML(
                "<h4 style='margin:10px 0 2px'>Labels as CSV</h4><p class='al-muted' "
                "style='margin:0'>Lines of <code>sample_index,label</code> (for an image folder "
                "also each file's <code>path</code>; an import may name files instead of "
                "indices); an import is one change that Undo reverts.</p>"
            ),
            pn.Row(
                self.export_csv,
                self.import_csv,
                styles={"align-items": "center", "flex-wrap": "wrap"},
            ),
            width=330,
            styles={"flex-shrink": "0"},
            stylesheets=[QUEUE_FIRST_ON_A_PHONE],
        )
        # A wrapping Row (cheaper to build than a FlexBox): the side panel drops below the
        # map on a tablet.
        main = pn.Row(
            pn.Column(
                toolbar,
                pn.Row(
                    self.plot_area,
                    self.legend,
                    sizing_mode="stretch_both",
                    styles={"flex-wrap": "wrap"},
                    stylesheets=[PHONE_GROWS],
                ),
                styles={"flex": "1 1 520px", "min-width": "320px"},
                sizing_mode="stretch_both",
                stylesheets=[PHONE_GROWS],
            ),
            self.side,
            styles={"flex-wrap": "wrap", "gap": "14px"},
            sizing_mode="stretch_both",
            stylesheets=[PHONE_GROWS],
        )
        return pn.Column(
            pn.Row(self.model_picker, self.status, sizing_mode="stretch_width"),
            main,
            self.keys,
            sizing_mode="stretch_both",
        )

    def shown(self) -> None:
        self._refresh_picker()
        model_id = self.state.model_id
        if model_id and model_id != self._loaded_model:
            self._load(model_id)
        elif not model_id:
            self.status.object = "<p class='al-muted'>Pick a model to label.</p>"

    def model_changed(self) -> None:
        """The model in use changed while this page is shown (e.g. back/forward in the URL)."""
        if self.state.model_id and self.state.model_id != self._loaded_model:
            self.model_picker.value = self.state.model_id
            self._load(self.state.model_id)

    def _refresh_picker(self) -> None:
        cards = self.state.lab.list_models()
        options = {c.name: c.id for c in cards}
        value = self.state.model_id if self.state.model_id in options.values() else None
        self._picker_busy = True  # a new option list is not a person picking a model
        try:
            self.model_picker.param.update(options=options, value=value)
        finally:
            self._picker_busy = False

    def _picked(self, event: Any) -> None:
        if self._picker_busy:
            return
        if event.new and event.new != self.state.model_id:
            self.state.model_id = event.new
            self._load(event.new)

    def _load(self, model_id: str) -> None:
        self._loaded_model = model_id
        try:
            warm = self.vm.is_warm(model_id)
        except Exception:
            warm = False
        if warm:  # cached: build the map now, so it travels with the page's first render
            self.vm.load(model_id)
            return
        # A placeholder inside the area, not `loading=True`: a loading flag set while the
        # session is being created and cleared later can stay stuck in the browser.
        self.plot_area[:] = [
            pn.Row(
                pn.indicators.LoadingSpinner(value=True, size=28, name=""),
                pn.pane.HTML("<p class='al-muted'>Loading the map…</p>"),
            )
        ]

        def failed(exc: BaseException) -> None:
            self.plot_area[:] = []
            self.status.object = error_banner(exc)

        self.ui.background(lambda: self.vm.load(model_id), failed=failed)

    def poll(self) -> None:
        """Labels from elsewhere, and a finished run's new map, without a page reload.

        The reads run in a thread: on the event loop they would hold every click and key
        press of this session behind a round trip to the tracking server."""
        if not self.vm.ready or self._polling:
            return
        self._polling = True

        def work() -> bool | Exception:
            try:
                self.vm.refresh_labels()
                return self.vm.check_for_new_run()
            except Exception as exc:  # the store is away for a moment: say so, try next tick
                return exc

        def done(outcome: bool | Exception) -> None:
            self._polling = False
            if isinstance(outcome, Exception):
                self.status.object = error_banner(outcome)
            elif outcome:
                self.state.notify("The map now shows the latest training run.", "info")

        self.ui.background(work, done=done)

    # --- the map --------------------------------------------------------------------------------

    def _rebuild_map(self) -> None:
        """A new model or a new run's predictions: (re)build the scatter once."""
        data = self.vm.columns()
        labels = {"label": data.pop("label")}
        classes = list(self.vm.classes)
        if self.source is not None and self._classes == classes:
            self.source.data = data  # same classes, newer predictions: keep the figure
            self.label_state.data = labels  # type: ignore[union-attr]
            self.picks.selected.indices = []  # type: ignore[union-attr]
            self._show_selected()
            self._fit_view(data)
            self._redraw_layers()
            if list(self.plot_area) != [self.map_pane]:  # a loading placeholder was shown
                self.plot_area[:] = [self.map_pane]
            self._render_side()
            return
        self._classes = classes
        self.source = ColumnDataSource(data=data)
        self.label_state = ColumnDataSource(data=labels, name="label-state")
        self.picks = ColumnDataSource(data={}, name="label-picks")
        self.selected_source = ColumnDataSource(data=self._selected_columns())
        self.view = map_raster.padded_view(data["x"], data["y"])
        self.raster_mapper = LinearColorMapper(palette=[map_raster.TRANSPARENT] * 2)
        self.raster_source = ColumnDataSource(
            {"image": [np.zeros((1, 1), np.uint8)], **self.view.image_glyph()}
        )
        self.labeled_source = ColumnDataSource({"x": [], "y": [], "label": []})  # _recolor fills it
        palette = class_palette(max(1, len(classes)))
        self.class_mapper = LinearColorMapper(
            palette=[UNLABELED_COLOR, *palette], low=-1.5, high=len(palette) - 0.5
        )
        self.certainty_mapper = LinearColorMapper(
            palette=Viridis256, low=0, high=1, nan_color=UNLABELED_COLOR
        )
        # the select tools select nothing themselves (no renderers): their geometry is
        # turned into picks in the browser (PICK_IN_REGION)
        box = BoxSelectTool(renderers=[])
        lasso = LassoSelectTool(renderers=[])
        plot = figure(
            tools=["pan", "wheel_zoom", box, lasso, "reset"],
            active_drag=lasso,
            active_scroll="wheel_zoom",
            sizing_mode="stretch_both",
            min_height=440,
            toolbar_location="above",
            output_backend="canvas",
            match_aspect=False,
            name="label-map",
            x_range=Range1d(start=self.view.x0, end=self.view.x1),
            y_range=Range1d(start=self.view.y0, end=self.view.y1),
        )
        plot.xaxis.axis_label, plot.yaxis.axis_label = "z0", "z1"
        plot.image(
            image="image", x="x", y="y", dw="dw", dh="dh", source=self.raster_source,
            color_mapper=self.raster_mapper, level="image", name="label-image",
        )  # fmt: skip
        # Every sample, not drawn (the image shows them): what hover finds.
        self.renderer = plot.scatter(
            "x", "y", source=self.source, size=5, fill_color=None, line_color=None,
            name="label-samples",
        )  # fmt: skip
        # The small layers a label or a pick changes, on the overlay level (see above).
        self.labeled_renderer = plot.scatter(
            "x", "y", source=self.labeled_source, size=5, line_color=None, fill_alpha=0.85,
            fill_color={"field": "label", "transform": self.class_mapper},
            level="overlay", name="label-labeled",
        )  # fmt: skip
        self.selected_renderer = plot.scatter(
            "x", "y", source=self.selected_source, size=6, line_color="#111111",
            line_width=1.2, fill_color={"field": "label", "transform": self.class_mapper},
            level="overlay", name="label-selected",
        )  # fmt: skip
        plot.on_event(RangesUpdate, self._view_moved)
        plot.on_change("inner_width", self._plot_resized)  # set by the browser once laid out
        plot.on_change("inner_height", self._plot_resized)
        names = CustomJSHover(
            args={"names": classes}, code="return value >= 0 ? names[value] : '—'"
        )
        label_names = CustomJSHover(  # the labels live in `label_state`, patched per key
            args={"names": classes, "labels": self.label_state},
            code=LABEL_OF_HOVERED,
        )
        plot.add_tools(
            HoverTool(
                renderers=[self.renderer],
                tooltips=[
                    ("sample", "$index"),
                    ("label", "$index{custom}"),
                    ("predicted", "@predicted{custom}"),
                    ("certainty", "@certainty{0.00}"),
                ],
                formatters={"$index": label_names, "@predicted": names},
            )
        )
        picking = {"source": self.source, "picks": self.picks, "plot": plot}
        plot.js_on_event(
            "tap", CustomJS(args={**picking, "radius": CLICK_RADIUS_PX}, code=NEAREST_ON_CLICK)
        )
        plot.js_on_event("panstart", CustomJS(args=picking, code=KEEP_DRAG_MODIFIERS))
        plot.js_on_event("selectiongeometry", CustomJS(args=picking, code=PICK_IN_REGION))
        self.picks.selected.on_change("indices", self._selected_in_plot)
        # Coloured and drawn before the plot goes out, so the browser gets its models with
        # their data: changes to models it does not know yet, sent in the same tick, could
        # reach it before them ("reference ... isn't known", seen once in CI under load).
        self._recolor()
        self.map_pane = pn.pane.Bokeh(plot, sizing_mode="stretch_both", min_height=440)
        self.plot_area[:] = [self.map_pane]
        self._build_class_buttons()
        self._render_side()

    def _selected_in_plot(self, attr: str, old: list[int], new: list[int]) -> None:
        indices = [int(i) for i in new]
        if indices != self.vm.selected:
            if self.vm.in_queue:  # picking on the map leaves the one-by-one queue
                self.vm.stop_queue()
                self._queue_changed()
            # Overlapping points arrive together from one click: show the first of them.
            keep = self.vm.current if self.vm.current in indices else None
            self.vm.param.update(
                selected=indices,
                current=keep if keep is not None else (indices[0] if indices else None),
            )

    def _patch_labels(self) -> None:
        """A label change: the map's label column and the side panel, sent together (one
        message: the browser lays the page out once). The legend does not count labels (the
        side panel's table does), so a key press leaves it alone."""
        change = self.vm.last_change
        if self.label_state is not None and change:
            self.label_state.patch({"label": [(int(i), int(v)) for i, v in change.items()]})
            if self.labeled_source is not None:  # small: the labeled samples only
                self.labeled_source.data = self._labeled_columns()
            self._show_selected()
        self._render_side()

    def _recolor(self) -> None:
        if self.renderer is None:
            return
        mode = self._map_mode()
        mapper = self.certainty_mapper if mode == "certainty" else self.class_mapper
        self.selected_renderer.glyph.fill_color = {"field": mode, "transform": mapper}
        self.legend.object = self._legend_html(mode)
        self._redraw_layers()

    # --- the map's image --------------------------------------------------------------------

    def _map_mode(self) -> str:
        """The colouring shown: "true" falls back to the labels when no class is known."""
        mode = self.vm.color_by
        return "label" if mode == "true" and not self.vm.has_truth else mode

    def _map_rows(self, which: np.ndarray, keys: Any) -> dict[str, Any]:
        """Rows `which` of the map: the columns `keys` and each sample's current label."""
        assert self.source is not None
        data = self.source.data
        rows = {key: np.asarray(data[key])[which] for key in keys}
        rows["label"] = np.asarray(self.vm.labels)[which].astype(np.int16)
        return rows

    def _selected_columns(self) -> dict[str, Any]:
        """The selected samples, with every colour column (drawn above the rest)."""
        assert self.source is not None
        return self._map_rows(np.asarray(self.vm.selected, dtype=np.int64), list(self.source.data))

    def _show_selected(self) -> None:
        if self.selected_source is not None:
            self.selected_source.data = self._selected_columns()

    def _labeled_columns(self) -> dict[str, Any]:
        """The labeled samples (drawn above the image, in label colours)."""
        return self._map_rows(np.flatnonzero(np.asarray(self.vm.labels) >= 0), ("x", "y"))

    def _layer_palette(self, mode: str) -> tuple[list[str], np.ndarray]:
        """The image's palette and each sample's slot in it, for a colouring."""
        data = self.source.data if self.source is not None else {}
        base = [map_raster.TRANSPARENT, map_raster.with_alpha(UNLABELED_COLOR)]
        if mode == "label":  # labeled samples are drawn above the image, in their colour
            return base, np.full(len(data.get("x", [])), map_raster.UNLABELED_SLOT, np.uint8)
        if mode == "certainty":
            step = (len(Viridis256) - 1) / (map_raster.CERTAINTY_LEVELS - 1)
            shades = [Viridis256[round(i * step)] for i in range(map_raster.CERTAINTY_LEVELS)]
            palette = base + [map_raster.with_alpha(c) for c in shades]
            return palette, map_raster.certainty_slots(np.asarray(data["certainty"]))
        classes = class_palette(max(1, len(self._classes)))[:253]
        palette = base + [map_raster.with_alpha(c) for c in classes]
        return palette, map_raster.class_slots(np.asarray(data[mode]))

    def _redraw_layers(self) -> None:
        """The image for the colouring in use, and the labeled samples above it (label
        colouring only); drawn now (~30 ms for 60,000 samples), so it travels with the map."""
        if self.source is None or self.view is None or self.raster_source is None:
            return
        mode = self._map_mode()
        palette, slots = self._layer_palette(mode)
        x, y = np.asarray(self.source.data["x"]), np.asarray(self.source.data["y"])
        self._raster_serial += 1  # a drawing still under way (`_redraw_later`) is stale now
        self._show_image(palette, map_raster.rasterize(x, y, slots, self.view), self.view)
        if self.labeled_renderer is not None:
            self.labeled_renderer.visible = mode == "label"
            self.labeled_source.data = self._labeled_columns()  # type: ignore[union-attr]

    def _fit_view(self, data: dict[str, Any]) -> None:
        """A new run's map lies elsewhere in the latent space: show all of it (Reset too)."""
        fitted = map_raster.padded_view(np.asarray(data["x"]), np.asarray(data["y"]))
        if self.view is not None:
            fitted = fitted.sized(self.view.width, self.view.height)
        self.view = fitted
        plot = self.map_pane.object if self.map_pane is not None else None
        if plot is not None:
            plot.x_range.update(start=fitted.x0, end=fitted.x1, reset_start=fitted.x0,
                                reset_end=fitted.x1)  # fmt: skip
            plot.y_range.update(start=fitted.y0, end=fitted.y1, reset_start=fitted.y0,
                                reset_end=fitted.y1)  # fmt: skip

    def _view_moved(self, event: Any) -> None:
        """Zoom or pan ended: the image again for the new view, drawn off the event loop
        (the person may keep moving: only the newest drawing is shown)."""
        if self.view is None or None in (event.x0, event.x1, event.y0, event.y1):
            return
        self.view = self.view.moved(event.x0, event.x1, event.y0, event.y1)
        self._redraw_later()

    def _plot_resized(self, attr: str, old: Any, new: Any) -> None:
        """The browser laid the plot out: an image of its size (pixels of the data area)."""
        self._plot_px[attr] = int(new or 0)
        width, height = self._plot_px.get("inner_width"), self._plot_px.get("inner_height")
        if self.view is None or not width or not height:
            return
        if (width, height) != (self.view.width, self.view.height):
            self.view = self.view.sized(width, height)
            self._redraw_later()

    def _redraw_later(self) -> None:
        if self.source is None or self.view is None:
            return
        self._raster_serial += 1
        serial, view, mode = self._raster_serial, self.view, self._map_mode()
        palette, slots = self._layer_palette(mode)
        x, y = np.asarray(self.source.data["x"]), np.asarray(self.source.data["y"])

        def done(image: np.ndarray) -> None:
            if serial == self._raster_serial:  # else a newer view or colouring is being drawn
                self._show_image(palette, image, view)

        self.ui.background(lambda: map_raster.rasterize(x, y, slots, view), done=done)

    def _show_image(self, palette: list[str], image: np.ndarray, view: map_raster.View) -> None:
        if self.raster_mapper is None or self.raster_source is None:
            return
        self.raster_mapper.update(palette=palette, low=-0.5, high=len(palette) - 0.5)
        self.raster_source.data = {"image": [image], **view.image_glyph()}

    def _legend_html(self, mode: str) -> str:
        if mode == "certainty":
            return (
                "<div><b>Certainty</b></div><div style='height:12px;width:140px;background:"
                "linear-gradient(90deg,#440154,#21918c,#fde725)'></div>"
                "<div class='al-muted'>0 … 1</div>"
            )
        palette = class_palette(max(1, len(self._classes)))
        # Labels are counted in the side panel's table (the one pane a key press updates);
        # predicted and true classes, which do not change while labeling, are counted here.
        source = self.source
        counted = mode != "label" and source is not None
        column = (
            np.asarray(source.data[mode])
            if source is not None and counted
            else np.array([], np.int64)
        )
        counts = np.bincount(column[column >= 0], minlength=len(self._classes))

        def tally(n: int) -> str:
            return f" <span class='al-muted'>({n})</span>" if counted else ""

        rows = [
            f"<div><span class='sw' style='background:{palette[i]}'></span>{esc(name)}"
            f"{tally(int(counts[i]))}</div>"
            for i, name in enumerate(self._classes)
        ]
        rows.append(
            f"<div><span class='sw' style='background:{UNLABELED_COLOR}'></span>"
            f"none{tally(int((column < 0).sum()))}</div>"
        )
        title = f"<div><b>{esc(COLOR_MODES[mode])}</b></div>"
        return f"<div class='al-legend-rows'>{title}{''.join(rows)}</div>"

    # --- side panel -----------------------------------------------------------------------------

    def _build_class_buttons(self) -> None:
        buttons = []
        for i, name in enumerate(self._classes[:40]):
            hint = f"{i}: " if i < 10 and name != str(i) else ""
            button = pn.widgets.Button(
                label=f"{hint}{name}",
                width=60 if len(hint + name) < 6 else 130,
                styles={"border-left": f"6px solid {class_palette(len(self._classes))[i]}"},
            )
            button.on_click(functools.partial(self._label_selection, i))
            buttons.append(button)
        self.class_buttons[:] = buttons

    def _label_selection(self, cls: int, event: Any = None) -> None:
        self._act(lambda: self.vm.label_selection(cls), "labeled")

    def _act(self, action: Any, verb: str) -> None:
        start = time.perf_counter()
        try:
            changed = action()  # saves to MLflow, then patches the plot (watchers run inline)
        except Exception as exc:
            self.saved.object = note(describe_error(exc), ok=False)
            return
        if changed:
            took = (time.perf_counter() - start) * 1000
            log.info(
                "label change: %d sample(s) %s in %.1f ms (saved, plot patched)",
                changed,
                verb,
                took,
            )
            self.saved.object = note(f"✓ Saved: {changed} sample(s) {verb}.")
        else:
            self.saved.object = (
                "<span class='al-muted'>Select samples first (click, box or lasso).</span>"
            )

    def _labels_csv(self) -> io.StringIO:
        if self.vm.has_model:
            self.export_csv.filename = f"{self.vm.model.name}-labels.csv"
        return io.StringIO(self.vm.labels_csv())

    def _import_csv(self, event: Any) -> None:
        if not event.new:
            return
        from activelab.labels import decode_csv

        try:
            changed = self.vm.import_csv(decode_csv(event.new, self.import_csv.filename or "file"))
        except Exception as exc:  # a malformed file: nothing changed, the line is named
            self.saved.object = note(describe_error(exc), ok=False)
            return
        self.saved.object = (
            note(f"✓ Saved: {changed} sample(s) imported.")
            if changed
            else "<span class='al-muted'>Nothing to change: those labels are already set.</span>"
        )

    def _history(self) -> None:
        self.undo_button.disabled = not self.vm.can_undo
        self.redo_button.disabled = not self.vm.can_redo

    def _selection_changed(self) -> None:
        if self.picks is not None and list(self.picks.selected.indices) != self.vm.selected:
            self.picks.selected.indices = list(self.vm.selected)
        self._show_selected()
        self._render_side()
        self._render_gallery()

    def _render_gallery(self) -> None:
        """Thumbnails of the selection with each one's predicted class and certainty (drawn
        when the selection changes, not on a key press: a label does not change them)."""
        if not self.vm.ready or len(self.vm.selected) < 2:
            self.gallery.object = ""
            self.gallery_order.visible = False
            return
        tiles = []
        for info in self.vm.gallery():
            image = self.vm.image(info["index"])
            picture = base64.b64encode(png(image, max(1, 48 // image.shape[-1]))).decode()
            certainty = fmt(info["certainty"], 2) if info["certainty"] is not None else "—"
            tiles.append(
                f"<figure title='sample {info['index']}'><img src='data:image/png;base64,"
                f"{picture}' alt='sample {info['index']}'><figcaption>"
                f"{esc(info['predicted'] or '—')} · {certainty}</figcaption></figure>"
            )
        more = len(self.vm.selected) - len(tiles)
        tail = f"<p class='al-muted'>and {more} more</p>" if more > 0 else ""
        self.gallery.object = f"<div class='al-gallery'>{''.join(tiles)}</div>{tail}"
        self.gallery_order.visible = True

    def _render_side(self) -> None:
        if not self.vm.ready:
            return
        selected = self.vm.selected
        self.selection_info.object = self._keys_help(len(selected))
        counts = self.vm.label_counts()
        total = sum(counts.values())
        rows = "".join(
            f"<tr><td>{esc(k)}</td><td style='text-align:right'>{v}</td></tr>"
            for k, v in counts.items()
        )
        self.stats.object = (
            f"<table style='font-size:13px'>{rows}<tr><td><b>total</b></td>"
            f"<td style='text-align:right'><b>{total}</b></td></tr></table>"
        )
        index = self.vm.current
        if index is None:
            self.detail.object = "<p class='al-muted'>Click a point to see its image.</p>"
            self.image.visible = self.recon.visible = False
            self._images_for = None
            return
        info = self.vm.describe(index)
        self.detail.object = (
            "<div class='al-kv'>"
            f"<div><b>sample</b>{index}</div>"
            f"<div><b>label</b>{esc(info['label'] or '—')}</div>"
            + (
                f"<div><b>predicted</b>{esc(info['predicted'])} "
                f"(certainty {fmt(info['certainty'], 2)})</div>"
                if info["predicted"] is not None
                # the untrained model's classes mean nothing: none is shown as if it did
                else "<div><b>predicted</b>— (after the first training)</div>"
            )
            + (f"<div><b>true</b>{esc(info['true'])}</div>" if info["true"] is not None else "")
            + "</div>"
        )
        if self._images_for == (index, self.vm.source_run):
            return  # a label change: the images stay as they are
        shown = self._images_for = (index, self.vm.source_run)
        original = self.vm.image(index)
        scale = max(1, self._image_px() // original.shape[-1])
        self.image.param.update(object=png(original, scale), visible=True)

        # The reconstruction runs the model (and may fetch its checkpoint): off the event
        # loop, so a key pressed right after a click is not kept waiting.
        def show(images: Any) -> None:
            reconstruction = images[1]
            if self._images_for == shown:
                self.recon.param.update(
                    object=png(reconstruction, scale) if reconstruction is not None else None,
                    visible=reconstruction is not None,
                )

        self.ui.background(lambda: self.vm.images(index), done=show)

    def _status(self) -> None:
        if self.vm.status:
            self.status.object = f"<p class='al-muted'>{esc(self.vm.status)}</p>"
        elif self.vm.ready:
            source = (
                f"run “{esc(self.vm.source_run_name)}”"
                if self.vm.source_run
                else "the untrained model (no training yet)"
            )
            self.status.object = f"<p class='al-muted'>Map from {source}.</p>"
            advice = self.vm.map_advice()
            self.advice.param.update(
                object=f"<p class='al-advice'>{esc(advice)}</p>" if advice else "",
                visible=bool(advice),
            )

    # --- actions ----------------------------------------------------------------------------------

    def _keys_help(self, selected: int) -> str:
        vm = self.vm
        if not vm.in_queue:
            return (
                f"<p class='al-muted'>{selected} selected — keys 0-9 label them, Backspace "
                "clears, Ctrl+Z undoes, N picks the next to label, Q labels one by one.</p>"
            )
        if vm.queue_done:
            return (
                f"<p><b>Queue done</b>: {len(vm.queue)} samples. Q queues the next "
                f"{vm.next_count}, Esc goes back to the map.</p>"
            )
        return (
            f"<p><b>Sample {vm.queue_position + 1} of {len(vm.queue)}</b> — keys 0-9 label it "
            "and move on, → skips, ← goes back, Ctrl+Z undoes, Esc leaves the queue.</p>"
        )

    def _image_px(self) -> int:
        """The sample's picture: large while labeling one by one (the two pictures side by
        side within the side panel's 330 px)."""
        return 140 if self.vm.in_queue else 112

    def _toggle_queue(self) -> None:
        if not self.vm.ready:
            return
        if self.vm.in_queue and not self.vm.queue_done:
            self.vm.stop_queue()
        else:
            picked = self.vm.start_queue()
            self.saved.object = note(f"Queued the next {len(picked)} to label, one by one.")
        self._queue_changed()

    def _queue_changed(self) -> None:
        in_queue = self.vm.in_queue
        self.queue_button.param.update(
            label="Leave the queue (Esc)" if in_queue else "Label one by one (Q)",
            color="primary" if in_queue else "light",
        )
        px = self._image_px()
        for picture in (self.image, self.recon):
            picture.param.update(width=px, height=px)
        # on a phone the picture being labeled comes above the map while in the queue
        self.side.css_classes = ["al-queue"] if in_queue else []
        self._images_for = None  # redraw the picture at its new size
        self._render_side()

    def _queue_key(self, key: str) -> bool:
        """Keys of the one-by-one queue; False if `key` is not one of them."""
        vm = self.vm
        if key.isdigit() and int(key) < len(self._classes):
            self._act(lambda: vm.label_in_queue(int(key)), "labeled")
        elif key == "undo":
            self._act(vm.undo_in_queue, "undone")
        elif key == "ArrowRight":
            vm.move_in_queue(1)
        elif key == "ArrowLeft":
            vm.move_in_queue(-1)
        elif key == "Escape":
            vm.stop_queue()
            self._queue_changed()
        elif key in ("q", "Q"):
            self._toggle_queue()
        else:
            return False
        return True  # (moving in the queue redraws the side panel and its keys help)

    def _next(self) -> None:
        if not self.vm.ready:
            return
        picked = self.vm.next_to_label()
        self.saved.object = (
            f"<span class='al-muted'>Selected the next {len(picked)} to label.</span>"
        )

    def _key(self) -> None:
        if not self.vm.ready or self.state.page != "label":
            return
        key = self.keys.key
        if self.vm.in_queue and self._queue_key(key):
            return
        if key in ("q", "Q"):
            self._toggle_queue()
        elif key.isdigit() and int(key) < len(self._classes):
            self._act(lambda: self.vm.label_selection(int(key)), "labeled")
        elif key in ("Backspace", "Delete"):
            self._act(self.vm.clear_selection, "cleared")
        elif key == "undo":
            self._act(self.vm.undo, "undone")
        elif key == "redo":
            self._act(self.vm.redo, "redone")
        elif key == "Escape":
            self.vm.param.update(selected=[], current=None)
        elif key in ("n", "N"):
            self._next()
