"""The frame around every page: navigation, the model in use, the version, notices."""

from __future__ import annotations

import functools
import importlib
import time
from pathlib import Path
from typing import Any

import panel as pn

from activelab import keys
from activelab.panel_app.context import get_context
from activelab.panel_app.pages.common import Page, UiThread, esc
from activelab.panel_app.vm.state import PAGES, AppState
from activelab.panel_app.widgets import ConnectionWatch, UrlSync
from activelab.runs import ACTIVE

CSS = (Path(__file__).parent / "theme.css").read_text()
RUN_WATCH_MS = 3000
SERVER_HEALTH_MS = 500


# The view of each page: (module, class); a page's module is imported when first visited.
PAGE_VIEWS = {
    "home": ("home", "HomePage"),
    "label": ("label", "LabelPage"),
    "train": ("train", "TrainPage"),
    "evaluate": ("evaluate", "EvaluatePage"),
    "compare": ("compare", "ComparePage"),
    "plugins": ("plugins", "PluginsPage"),
    "settings": ("settings", "SettingsPage"),
}


def make_page(key: str, state: AppState) -> Page:
    """The view of one page (pages are built when first visited)."""
    module, name = PAGE_VIEWS[key]
    page_class = getattr(importlib.import_module(f"activelab.panel_app.pages.{module}"), name)
    page: Page = page_class(state)
    return page


class Shell(pn.viewable.Viewer):
    """Navigation between pages, kept in step with the URL (`?page=label&model=3`)."""

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.pages: dict[str, Page] = {}
        self.current: Page | None = None
        self._last_run: tuple[str, str | None, str | None] | None = None
        # a run that ends after this moment is news, even if the first look comes later (it
        # runs in a thread, and a busy machine can start it seconds after the page opened)
        self._opened_ms = int(time.time() * 1000)
        self._watching = False  # a look at the latest run is under way
        self.ui = UiThread()
        self.nav = {
            key: pn.widgets.Button(label=title, color="light", margin=(4, 2))
            for key, title in PAGES.items()
        }
        for key, button in self.nav.items():
            button.on_click(functools.partial(self._go_to, key))
        self.model_label = pn.pane.HTML("", margin=(8, 12))
        self.mlflow_link = pn.pane.HTML("", margin=(8, 4))
        self.main = pn.Column(sizing_mode="stretch_both", margin=(8, 12))
        self.server_banner = pn.pane.Alert(
            "", alert_type="warning", visible=False, sizing_mode="stretch_width", margin=(0, 12)
        )
        state.param.watch(self._sync, ["page", "model_id"])
        state.param.watch(self._notice, "notices")

    def _go_to(self, page: str, event: Any = None) -> None:
        self.state.page = page

    def __panel__(self) -> pn.viewable.Viewable:
        self._apply_url_args()
        self.url = UrlSync(page=self.state.page, model=self.state.model_id)
        self.state.param.watch(self._to_url, ["page", "model_id"])
        self.url.param.watch(self._from_url, ["page", "model"])
        header = pn.Row(
            pn.pane.HTML("<span class='al-brand'>activelab</span>", margin=(10, 12, 0, 4)),
            *self.nav.values(),
            pn.HSpacer(),
            self.model_label,
            self.mlflow_link,
            pn.pane.HTML(
                f"<span class='al-muted'>v{esc(self.state.version)}</span>", margin=(10, 8)
            ),
            css_classes=["al-header"],
            sizing_mode="stretch_width",
            styles={"flex-wrap": "wrap"},
        )
        # Build the page now (the URL's page and model are already synced), so it is part
        # of the first document instead of a second round trip after load.
        self._show()
        self._watch_runs()  # the first look, so a run that ends from now on is announced
        pn.state.add_periodic_callback(self._watch_runs, period=RUN_WATCH_MS)
        pn.state.add_periodic_callback(self._show_server_health, period=SERVER_HEALTH_MS)
        return pn.Column(
            header,
            self.server_banner,
            self.main,
            ConnectionWatch(),
            self.url,
            sizing_mode="stretch_both",
        )

    def _to_url(self, *events: Any) -> None:
        self.url.param.update(page=self.state.page, model=self.state.model_id)

    def _from_url(self, *events: Any) -> None:
        """Back / Forward in the browser: show the page and model of that address."""
        page = self.url.page if self.url.page in PAGES else "home"
        self.state.param.update(page=page, model_id=self.url.model)

    def _show_server_health(self) -> None:
        """A banner while the tracking server does not answer (probed in one thread)."""
        message = get_context().server_health.message()
        if message is None:
            if self.server_banner.visible:
                self.server_banner.visible = False
            return
        self.server_banner.object = message  # our own text: no user input in it
        self.server_banner.visible = True

    def _watch_runs(self) -> None:
        """A notification, on any page, when the model's latest run finishes or fails (the
        reads run in a thread, so clicks never wait behind them)."""
        model_id = self.state.model_id
        if not model_id:
            self._last_run = None
            return
        if self._watching:
            return
        self._watching = True

        def done(seen: tuple[str, str | None, str | None, Any] | None) -> None:
            self._watching = False
            self.announce(seen)

        self.ui.background(lambda: self._read_latest_run(model_id), done=done)

    def look_at_latest_run(self) -> None:
        """`_watch_runs` in this thread (tests, and anyone who wants the look now)."""
        if self.state.model_id:
            self.announce(self._read_latest_run(self.state.model_id))

    def _read_latest_run(self, model_id: str) -> tuple[str, str | None, str | None, Any] | None:
        """(model, latest run id, its status, the run if it moved); None when the store is
        away for a moment (the next tick tries again)."""
        try:
            experiment = self.state.lab.tracking.get_experiment(model_id)
        except Exception:
            return None
        if experiment is None:  # deleted meanwhile
            return None
        tags = experiment.tags
        run_id, tag_status = tags.get(keys.LATEST_RUN), tags.get(keys.LATEST_RUN_STATUS)
        before = self._last_run
        same_run = before is not None and before[:2] == (model_id, run_id)
        if before is not None and same_run and (before[2] not in ACTIVE or tag_status == before[2]):
            return model_id, run_id, before[2], None  # the same run: over already, or as it was
        # Something moved. The run's own status decides: the experiment's two tags are set
        # one after the other, and a look between them would pair a new run with the old
        # run's status (announcing "finished" for a run that just started).
        run, status = None, tag_status
        if run_id:
            try:
                run = self.state.lab.tracking.get_run(run_id)
            except Exception:
                return None
            status = run.info.status
        return model_id, run_id, status, run

    def announce(self, seen: tuple[str, str | None, str | None, Any] | None) -> None:
        """Record what a look saw; notify when the model's latest run has ended since."""
        if seen is None or seen[0] != self.state.model_id:
            return  # the store was away, or the person moved to another model meanwhile
        model_id, run_id, status, run = seen
        before = self._last_run
        if run is None and before is not None and before[:2] == (model_id, run_id):
            return  # nothing moved
        self._last_run = (model_id, run_id, status)
        if run is None or status in ACTIVE:
            return  # nothing has ended
        if before is None:  # the first look: only a run that ended since the page opened
            if (run.info.end_time or 0) < self._opened_ms:
                return
        elif before[0] != model_id:
            return  # a first look at another model
        name = run.info.run_name or (run_id or "")[:8]
        if status == "FINISHED":
            self.state.notify(f"Training run “{name}” finished.", "success")
        elif status == "KILLED":
            self.state.notify(f"Training run “{name}” stopped.", "warning")
        else:
            error = run.data.tags.get(keys.ERROR, "")
            self.state.notify(f"Training run “{name}” failed. {error}".strip(), "error")

    def _apply_url_args(self) -> None:
        """Take the page and model from the request's URL before anything is built, so the
        first document is already right (changes made later from the browser's location
        report arrive after the first render and can race it)."""
        args = pn.state.session_args or {}

        def arg(name: str) -> str:
            values = args.get(name) or [b""]
            value = values[0]
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

        page, model_id = arg("page"), arg("model")
        self.state.param.update(
            page=page if page in PAGES else self.state.page,
            model_id=model_id or self.state.model_id,
        )

    def _sync(self, *events: Any) -> None:
        """One reaction to a page and/or model change (open_model changes both at once)."""
        if any(e.name == "page" for e in events):
            self._show()
        else:
            self._header()
            if self.current is not None:
                self.current.model_changed()

    def _show(self) -> None:
        key = self.state.page
        for name, button in self.nav.items():
            button.color = "primary" if name == key else "light"
        if self.current is not None:
            self.current.deactivate()
        if key not in self.pages:
            self.pages[key] = make_page(key, self.state)
        self.current = self.pages[key]
        # Activate before showing: widget changes then travel with the page's first render
        # instead of racing it in the browser.
        self.current.activate()
        self.main[:] = [self.current]
        self._header()

    def _header(self) -> None:
        model_id = self.state.model_id
        context = self.state.context
        name = ""
        if model_id:
            try:
                name = self.state.lab.get_model(model_id).name
            except Exception:
                name = ""
        self.model_label.object = (
            f"<span class='al-muted'>model</span> <b>{esc(name)}</b>" if name else ""
        )
        url = context.experiment_url(model_id) if model_id else context.mlflow_ui_url
        self.mlflow_link.object = (
            f"<a href='{esc(url)}' target='_blank' rel='noopener'>Open in MLflow ↗</a>"
            if url
            else ""
        )

    def _notice(self, event: Any) -> None:
        notice = self.state.notice
        if notice is None or pn.state.notifications is None:
            return
        show = getattr(pn.state.notifications, notice.kind, pn.state.notifications.info)
        # notifications render HTML; every text is plain (names, errors): escape it here
        show(esc(notice.text), duration=6000 if notice.kind != "error" else 0)
