"""Plugins: loaded plugins and task-folder errors, updated as files change."""

from __future__ import annotations

from typing import Any

import panel as pn

from activelab.panel_app.pages.common import Page, esc
from activelab.panel_app.vm.plugins import PluginsViewModel
from activelab.panel_app.vm.state import AppState


class PluginsPage(Page):
    poll_ms = 1000  # a file dropped into a task folder shows up within a second

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(state, **params)
        self.vm = PluginsViewModel(state)
        self.body = pn.pane.HTML("", sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.HTML("<h2 style='margin:4px 0'>Plugins</h2>"),
            self.body,
            sizing_mode="stretch_width",
        )

    def shown(self) -> None:
        self.state.context.start_watching()
        self._refresh(force=True)

    def poll(self) -> None:
        self._refresh()

    @staticmethod
    def _row(record: Any) -> str:
        name = record.name if record.source != "folder" else record.location.rsplit("/", 1)[-1]
        registered = "<br>".join(
            f"{esc(c)}: {esc(', '.join(k))}" for c, k in record.registered.items()
        )
        events = ", ".join(h for h in record.hooks if not h.startswith("register_"))
        return (
            f"<tr><td>{esc(name)}</td><td>{esc(record.source)}</td>"
            f"<td>{esc(record.version or '-')}</td><td>{registered}</td>"
            f"<td class='al-muted'>{esc(events)}</td></tr>"
        )

    def _refresh(self, force: bool = False) -> None:
        if self.vm.refresh() or force:
            self.body.object = self._html()

    def _html(self) -> str:
        rows = "".join(self._row(r) for r in self.vm.records)
        errors = "".join(
            f"<div class='al-banner' style='margin:6px 0'><b>{esc(e.file or e.plugin)}"
            f"{':' + str(e.line) if e.line else ''}</b> — {esc(e.message)}</div>"
            for e in self.vm.errors
        )
        folders = "".join(f"<code>{esc(f)}</code><br>" for f in self.vm.folders)
        return (
            "<table class='al-plugins'>"
            "<tr><th>plugin</th><th>source</th><th>version</th>"
            f"<th>registers</th><th>events</th></tr>{rows}</table>"
            + (f"<h3>Load errors</h3>{errors}" if errors else "")
            + f"<h3>Watched task folders</h3><p>{folders}</p><p class='al-muted'>Save a .py file "
            "that defines a Task subclass there and it appears here within a second.</p>"
        )
