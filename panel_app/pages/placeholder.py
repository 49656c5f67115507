"""A page that is not built yet says so plainly."""

from __future__ import annotations

from typing import Any

import panel as pn


class PlaceholderPage(pn.viewable.Viewer):
    def __init__(self, title: str, what: str, **params: Any) -> None:
        super().__init__(**params)
        self.title = title
        self.what = what

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.pane.HTML(
            f"<div class='al-empty'><h3>{self.title} is not built yet</h3><p>{self.what}</p>"
            "<p class='al-muted'>Until then, the CLI and the MLflow UI cover it.</p></div>",
            sizing_mode="stretch_width",
        )

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass
