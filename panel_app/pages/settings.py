"""Settings: where the data lives, which store is in use, defaults for new models."""

from __future__ import annotations

import json
from typing import Any

import panel as pn

from activelab.panel_app.pages.common import Page, esc
from activelab.panel_app.vm.state import AppState
from activelab.presets import PRESETS


def settings_path(state: AppState) -> Any:
    return state.lab.settings.home / "app-settings.json"


def load_preferences(state: AppState) -> dict[str, Any]:
    path = settings_path(state)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class SettingsPage(Page):
    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(state, **params)
        prefs = load_preferences(state)
        datasets = sorted(state.lab.plugins.registry("datasets"))
        self.preset = pn.widgets.Select(
            label="Preset for new models",
            options=list(PRESETS),
            value=prefs.get("preset", "default"),
        )
        self.dataset = pn.widgets.Select(
            label="Data set for new models", options=datasets, value=prefs.get("dataset", "digits")
        )
        self.save = pn.widgets.Button(label="Save defaults", color="primary")
        self.save.on_click(lambda e: self._save())
        self.info = pn.pane.HTML("", sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.HTML("<h2 style='margin:4px 0'>Settings</h2>"),
            self.info,
            pn.pane.HTML("<h3>Defaults for new models</h3>"),
            self.preset,
            self.dataset,
            self.save,
            sizing_mode="stretch_width",
        )

    def shown(self) -> None:
        settings = self.state.lab.settings
        context = self.state.context
        folders = "".join(f"<code>{esc(f)}</code><br>" for f in settings.tasks_dirs)
        url = esc(context.mlflow_ui_url or "")
        ui = f"<a href='{url}' target='_blank' rel='noopener'>{url}</a>" if url else "not started"
        if url and not context.mlflow_ui_ready:
            ui += " (starting…)"
        artifacts = esc(settings.artifact_root or "chosen by the server")
        self.info.object = (
            "<div class='al-kv'>"
            f"<div><b>Tracking URI</b><code>{esc(settings.tracking_uri)}</code>"
            f"{' (embedded default store)' if settings.embedded else ''}</div>"
            f"<div><b>Data directory</b><code>{esc(settings.home)}</code></div>"
            f"<div><b>Artifacts</b><code>{artifacts}</code></div>"
            f"<div><b>MLflow UI</b>{ui}</div>"
            f"<div><b>Task folders</b>{folders}</div>"
            f"<div><b>Version</b>activelab {esc(self.state.version)}</div></div>"
        )

    def _save(self) -> None:
        path = settings_path(self.state)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"preset": self.preset.value, "dataset": self.dataset.value}))
        self.state.notify("Defaults saved.", "success")
