"""Import a user's task file (a `.py` dropped into a watched folder) as a plugin.

A file either implements hooks with `activelab.hookimpl` (then the module is the plugin) or
simply defines subclasses of the plugin bases (Task, Trainer, Dataset, QueryStrategy,
Analyzer, Backend: every category in `activelab.plugins.CATEGORIES`), which are registered
for it. Each file gets a stable module name, dropped before every re-import.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
import types
from pathlib import Path
from typing import Any

from activelab.errors import PluginError
from activelab.hookspecs import PROJECT, hookimpl
from activelab.plugins import CATEGORIES, classes_defined_in
from activelab.time_limit import run_with_time_limit


def module_name_for(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return f"activelab_user_task_{stem}_{digest}"


def _has_hookimpls(module: types.ModuleType) -> bool:
    marker = f"{PROJECT}_impl"
    return any(hasattr(value, marker) for value in vars(module).values())


class FolderPlugin:
    """Registers the component classes a task file defines: it implements the registration
    hook of each category the file has classes for, and no other hook."""

    def __init__(self, path: Path, classes: dict[str, list[type]]) -> None:
        self.path = path
        self.classes = classes
        for category, found in classes.items():
            hook_name = CATEGORIES[category][0]
            setattr(self, hook_name, _registration_hook(found))


def _registration_hook(classes: list[type]) -> Any:
    @hookimpl
    def hook(register: Any) -> None:
        for cls in classes:
            register(cls)

    return hook


def import_task_file(path: Path) -> object:
    """Execute `path` as a fresh module and return the plugin object for it (within the
    plugin import time limit: see activelab.time_limit)."""
    name = module_name_for(path)
    sys.modules.pop(name, None)
    # Compile from source every time: a cached .pyc keyed on a one-second mtime could
    # serve stale code after a quick edit.
    source = path.read_text(encoding="utf-8")
    code = compile(source, str(path), "exec")
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        run_with_time_limit(
            lambda: exec(code, module.__dict__), f"Importing {path.name}", str(path)
        )
    except BaseException:
        sys.modules.pop(name, None)
        raise
    if _has_hookimpls(module):
        return module
    classes: dict[str, list[type]] = {}
    for category, (_hook, base_module, base_name) in CATEGORIES.items():
        base = getattr(importlib.import_module(base_module), base_name)
        found = classes_defined_in(module, base)
        if found:
            classes[category] = found
    if not classes:
        bases = ", ".join(base_name for _hook, _module, base_name in CATEGORIES.values())
        raise PluginError(
            f"defines no subclass with a `kind` of {bases}, and no function marked with "
            "activelab.hookimpl."
        )
    return FolderPlugin(path, classes)


def forget_task_file(path: Path) -> None:
    sys.modules.pop(module_name_for(path), None)
