"""The session's shared state: which page, which model, and notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import param

from activelab.version import __version__

if TYPE_CHECKING:
    from activelab.models import Lab
    from activelab.panel_app.context import AppContext

PAGES = {
    "home": "Home",
    "label": "Label",
    "train": "Train",
    "evaluate": "Evaluate",
    "compare": "Compare",
    "plugins": "Plugins",
    "settings": "Settings",
}


class Notice(param.Parameterized):
    """One message for the person (shown as a toast by the view)."""

    kind: param.Selector[str] = param.Selector(
        default="info", objects=["info", "success", "warning", "error"]
    )
    text = param.String(default="")
    action_label = param.String(default="")
    action = param.Callable(default=None)


class AppState(param.Parameterized):
    """Kept across pages and in the URL (`?page=label&model=3`)."""

    page: param.Selector[str] = param.Selector(default="home", objects=list(PAGES))
    model_id = param.String(default="", doc="The model in use ('' for none).")
    notice = param.ClassSelector(class_=Notice, default=None, allow_None=True)
    notices = param.Integer(default=0, doc="Grows with every new notice.")
    version = param.String(default=__version__, constant=True)

    def __init__(self, context: AppContext, **params: Any) -> None:
        super().__init__(**params)
        self.context = context

    @property
    def lab(self) -> Lab:
        return self.context.lab

    def notify(
        self, text: str, kind: str = "info", action_label: str = "", action: Any = None
    ) -> None:
        self.notice = Notice(kind=kind, text=text, action_label=action_label, action=action)
        self.notices += 1

    def open_model(self, model_id: str, page: str = "label") -> None:
        self.param.update(model_id=model_id, page=page)
