"""Headless Chromium (Debian's package) driven by Playwright, and helpers for the app's pages."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Screen position of a sample on the label map, from the plot's own scales.
POINT_OF_SAMPLE = """(i) => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  const plot = doc.get_model_by_name("label-map");
  const view = Bokeh.index.find_one(plot);
  const data = doc.get_model_by_name("label-samples").data_source.data;
  const rect = view.canvas_view.el.getBoundingClientRect();
  return [rect.left + view.frame.x_scale.compute(data.x[i]),
          rect.top + view.frame.y_scale.compute(data.y[i])];
}"""

# The map's labels, as the browser has them (patched in place, not rebuilt).
MAP_LABELS = """() => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  return Array.from(doc.get_model_by_name("label-state").data.label);
}"""

# Pick samples on the map as a click, box or lasso does (the browser's picks go to the server).
PICK_SAMPLES = """(indices) => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  doc.get_model_by_name("label-picks").selected.indices = indices;
}"""

# Screen positions of every sample on the label map.
POINTS_ON_SCREEN = """() => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  const view = Bokeh.index.find_one(doc.get_model_by_name("label-map"));
  const data = doc.get_model_by_name("label-samples").data_source.data;
  const rect = view.canvas_view.el.getBoundingClientRect();
  return Array.from(data.x, (x, i) => [rect.left + view.frame.x_scale.compute(x),
                                        rect.top + view.frame.y_scale.compute(data.y[i])]);
}"""

# The samples picked on the map, as the browser has them.
MAP_PICKS = """() => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  return Array.from(doc.get_model_by_name("label-picks").selected.indices);
}"""

MAP_FRAME = """() => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  const view = Bokeh.index.find_one(doc.get_model_by_name("label-map"));
  const rect = view.canvas_view.el.getBoundingClientRect();
  const f = view.frame.bbox;
  return [rect.left + f.x0, rect.top + f.y0, f.width, f.height];
}"""


def chromium_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: run `bash .ci/setup` (it installs Debian's chromium)."
    return None


# The map's image layer (drawn on the server) against the plot's ranges, and the labeled layer.
MAP_LAYERS = """() => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  const plot = doc.get_model_by_name("label-map");
  const image = doc.get_model_by_name("label-image").data_source.data;
  const labeled = doc.get_model_by_name("label-labeled").data_source.data;
  return {image: [image.x[0], image.x[0] + image.dw[0], image.y[0], image.y[0] + image.dh[0]],
          view: [plot.x_range.start, plot.x_range.end, plot.y_range.start, plot.y_range.end],
          labeled: labeled.x.length};
}"""
