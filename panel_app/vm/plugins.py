"""Plugins: what is loaded, from where, what it registers, and what failed (live)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import param

if TYPE_CHECKING:
    from activelab.panel_app.vm.state import AppState


class PluginsViewModel(param.Parameterized):
    records = param.List(default=[])
    errors = param.List(default=[])
    conflicts = param.List(default=[])
    folders = param.List(default=[])
    generation = param.Integer(default=-1)

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state

    def refresh(self) -> bool:
        """Re-read the plugin host; True if anything changed since the last read."""
        host = self.state.lab.plugins
        if host.generation == self.generation:
            return False
        records = host.describe()
        self.param.update(
            records=records,
            errors=list(host.errors.values()),
            conflicts=list(host.conflicts),
            folders=[str(f) for f in self.state.lab.settings.tasks_dirs],
            generation=host.generation,
        )
        return True
