"""The activelab Panel app.

`activelab serve` runs it (with the MLflow UI beside it). For people who deploy Panel apps it
also works as a plain Panel script:

    panel serve "$(activelab app-path)" --address 127.0.0.1 --port 5006

which uses `MLFLOW_TRACKING_URI` / `ACTIVELAB_HOME` like the rest of activelab.
"""

from __future__ import annotations

import panel as pn

from activelab.panel_app.context import AppContext, get_context
from activelab.panel_app.shell import CSS, Shell
from activelab.panel_app.vm.state import AppState

TITLE = "activelab"


def configure_panel() -> None:
    """Panel settings for the app (idempotent)."""
    pn.extension(
        "modal",
        "tabulator",
        notifications=True,
        raw_css=[CSS],
        disconnect_notification="Lost the connection to the activelab server.",
    )


# Panel's page template has no viewport tag: a phone would lay the page out ~980 px wide and
# shrink it. Zoom stays allowed (no maximum-scale): people zoom into images. (Panel puts
# "{% extends base %}" before a template given as text.)
PAGE_TEMPLATE = """{% block preamble %}{{ super() }}
<meta name="viewport" content="width=device-width, initial-scale=1">
{% endblock %}"""


def build_app(context: AppContext | None = None) -> pn.viewable.Viewable:
    """One session's app: a fresh AppState over the process-wide context."""
    configure_panel()
    if pn.state.curdoc is not None:
        pn.state.curdoc.template = PAGE_TEMPLATE  # type: ignore[assignment]  # Bokeh takes text too
    state = AppState(context or get_context())
    return Shell(state).__panel__()


if __name__.startswith("bokeh"):  # `panel serve` of this file
    build_app().servable(title=TITLE)
