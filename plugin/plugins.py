"""The one plugin manager: loads plugins, answers "which tasks/trainers/... exist", fires events.

Load order (DESIGN.md): installed entry points (each guarded), the built-ins in
`activelab.tasks`, then user task folders. Nothing else touches `pm.hook` directly.

Environment:
- `ACTIVELAB_DISABLE_PLUGINS=name,name` skips plugins by name (entry-point name, built-in
  module name, or folder file stem).
- `ACTIVELAB_TRACE_HOOKS=1` prints every hook call to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import os
import re
import sys
import threading
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from activelab import hookspecs
from activelab.errors import PluginError
from activelab.time_limit import PluginImportTimeout, run_with_time_limit

if TYPE_CHECKING:
    from collections.abc import Iterator

    from activelab.runtime import RunContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "activelab"
# what a plugin class's `kind` may be: it ends up in config keys, metric names and file names
KIND_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
DISABLE_ENV = "ACTIVELAB_DISABLE_PLUGINS"
TRACE_ENV = "ACTIVELAB_TRACE_HOOKS"

# Built-in plugins, loaded through the same hooks as third-party ones.
BUILTIN_PLUGINS = (
    "activelab.tasks.losses",
    "activelab.tasks.consistency",
    "activelab.tasks.ssvae",
    "activelab.tasks.datasets",
    "activelab.tasks.strategies",
    "activelab.tasks.analyzers",
    "activelab.tasks.backends",
)

# registration hook -> the base class its callback accepts (resolved lazily)
CATEGORIES = {
    "tasks": ("register_tasks", "activelab.task", "Task"),
    "trainers": ("register_trainers", "activelab.trainer", "Trainer"),
    "datasets": ("register_datasets", "activelab.dataset", "Dataset"),
    "strategies": ("register_strategies", "activelab.strategy", "QueryStrategy"),
    "analyzers": ("register_analyzers", "activelab.analyzer", "Analyzer"),
    "backends": ("register_backends", "activelab.backend", "Backend"),
}

SOURCE_ENTRY_POINT = "entry point"
SOURCE_BUILTIN = "built-in"
SOURCE_FOLDER = "folder"

C = TypeVar("C")


@dataclass
class LoadError:
    """A plugin that could not be loaded, or registered something unusable."""

    plugin: str
    source: str
    message: str
    file: str | None = None
    line: int | None = None
    details: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else ""
        return f"{self.plugin}: {where}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin,
            "source": self.source,
            "file": self.file,
            "line": self.line,
            "message": self.message,
        }


@dataclass
class PluginRecord:
    """What `activelab plugins` shows for one plugin."""

    name: str
    source: str
    version: str | None
    location: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def error_from_exception(
    plugin: str, source: str, exc: BaseException, file: str | None
) -> LoadError:
    """A LoadError naming the line in `file` where `exc` arose (syntax or runtime)."""
    line = None
    if isinstance(exc, PluginImportTimeout):
        line = exc.line
    elif isinstance(exc, SyntaxError) and (file is None or exc.filename == file):
        line = exc.lineno
    elif file is not None:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename == file:
                line = frame.lineno
                break
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        message = f"SyntaxError: {exc.msg}"
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return LoadError(plugin, source, message, file=file, line=line, details=details)


def _disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _activelab_version() -> str:
    from activelab.version import __version__

    return __version__


class PluginHost:
    """The plugin manager plus the registries built from its registration hooks."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.errors: dict[str, LoadError] = {}  # plugin name -> its load error
        self.conflicts: list[str] = []
        self._lock = threading.RLock()
        self._generation = 0
        self._cache: dict[str, tuple[int, dict[str, type[Any]]]] = {}
        self._listeners: list[Any] = []
        self._loaded = False
        self._folders_read: set[Path] = set()
        if os.environ.get(TRACE_ENV, "").lower() in ("1", "true", "yes"):
            self.pm.trace.root.setwriter(lambda text: sys.stderr.write(f"[activelab hook] {text}"))
            self.pm.enable_tracing()

    # --- loading -----------------------------------------------------------------------------

    def load(self, tasks_dirs: tuple[Path, ...] | list[Path] = ()) -> None:
        """Entry points, built-ins, then the `.py` files in `tasks_dirs`; idempotent."""
        with self._lock:
            if not self._loaded:
                self._loaded = True
                self._load_entry_points()
                self._load_builtins()
            for folder in tasks_dirs:
                # Each folder is read once; later changes arrive through the TaskRegistry.
                folder = Path(folder).resolve()
                if folder in self._folders_read:
                    continue
                self._folders_read.add(folder)
                for path in sorted(folder.glob("*.py")):
                    self.load_file(path)

    def _load_entry_points(self) -> None:
        disabled = _disabled_names()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or ep.name in self.records:
                continue
            dist = getattr(ep, "dist", None)
            version = dist.version if dist is not None else None
            location = f"{dist.metadata['Name']} ({ep.value})" if dist is not None else ep.value
            try:
                plugin = run_with_time_limit(ep.load, f"Importing entry point {ep.value}")
                self.add(plugin, ep.name, SOURCE_ENTRY_POINT, version, location)
            except Exception as exc:  # one broken plugin never stops the rest
                self._record_error(error_from_exception(ep.name, SOURCE_ENTRY_POINT, exc, None))

    def _load_builtins(self) -> None:
        disabled = _disabled_names()
        for module_name in BUILTIN_PLUGINS:
            short = module_name.rsplit(".", 1)[-1]
            if module_name in disabled or short in disabled:
                continue
            try:
                module = importlib.import_module(module_name)
                self.add(module, module_name, SOURCE_BUILTIN, _activelab_version(), module_name)
            except Exception as exc:
                self._record_error(error_from_exception(module_name, SOURCE_BUILTIN, exc, None))

    def add(
        self, plugin: object, name: str, source: str, version: str | None, location: str
    ) -> None:
        """Register one plugin object (module or instance) under `name`."""
        with self._lock:
            self.pm.register(plugin, name=name)
            try:
                self.pm.check_pending()
            except pluggy.PluginValidationError as exc:
                self.pm.unregister(name=name)
                raise PluginError(f"Plugin {name!r} implements an unknown hook: {exc}") from exc
            self.errors.pop(name, None)
            hooks = sorted(h.name for h in (self.pm.get_hookcallers(plugin) or []))
            self.records[name] = PluginRecord(name, source, version, location, hooks)
            self._changed()

    def remove(self, name: str) -> None:
        with self._lock:
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
            self.records.pop(name, None)
            self.errors.pop(name, None)
            self._changed()

    def _record_error(self, error: LoadError) -> None:
        with self._lock:
            self.errors[error.plugin] = error
            log.warning("activelab plugin not loaded: %s", error)
            self._changed()

    # --- user task folders -------------------------------------------------------------------

    @staticmethod
    def folder_plugin_name(path: Path) -> str:
        return f"{SOURCE_FOLDER}:{Path(path).resolve()}"

    def load_file(self, path: Path) -> LoadError | None:
        """(Re)load one task file; returns its error, if any. The previous version is dropped."""
        from activelab.task_files import import_task_file

        path = Path(path).resolve()
        name = self.folder_plugin_name(path)
        with self._lock:
            self.remove(name)
            if path.stem in _disabled_names():
                return None
            try:
                plugin = import_task_file(path)
                version = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
                    timespec="seconds"
                )
                self.add(plugin, name, SOURCE_FOLDER, version, str(path))
            except Exception as exc:
                error = error_from_exception(name, SOURCE_FOLDER, exc, str(path))
                self._record_error(error)
                return error
            return None

    def unload_file(self, path: Path) -> None:
        from activelab.task_files import forget_task_file

        path = Path(path).resolve()
        with self._lock:
            self.remove(self.folder_plugin_name(path))
            forget_task_file(path)

    def unload_folder(self, folder: Path) -> None:
        """Drop every plugin loaded from `folder` and forget that it was read."""
        folder = Path(folder).resolve()
        with self._lock:
            for name in list(self.records) + list(self.errors):
                if (
                    name.startswith(SOURCE_FOLDER + ":")
                    and Path(name[len(SOURCE_FOLDER) + 1 :]).parent == folder
                ):
                    self.unload_file(Path(name[len(SOURCE_FOLDER) + 1 :]))
            self._folders_read.discard(folder)

    # --- registries --------------------------------------------------------------------------

    def _changed(self) -> None:
        self._generation += 1
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("plugin change listener failed")

    def subscribe(self, listener: Any) -> None:
        """Call `listener()` whenever plugins are added, removed or fail to load."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Any) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def generation(self) -> int:
        """Grows each time the set of plugins changes (for caches and the app)."""
        return self._generation

    def registry(self, category: str) -> dict[str, type[Any]]:
        """kind -> class for one category ("tasks", "trainers", ...), first registration wins."""
        with self._lock:
            cached = self._cache.get(category)
            if cached and cached[0] == self._generation:
                return cached[1]
            hook_name, base_module, base_name = CATEGORIES[category]
            base = getattr(importlib.import_module(base_module), base_name)
            found: dict[str, type[Any]] = {}
            owners: dict[str, str] = {}  # kind -> the plugin that registered it
            collected: list[type[Any]] = []
            for plugin_name, error in self._call_each(hook_name, register=collected.append):
                if error is not None:
                    self.errors[plugin_name] = error_from_exception(
                        plugin_name, self._source_of(plugin_name), error, None
                    )
                    collected.clear()
                    continue
                record = self.records.get(plugin_name)
                for cls in collected:
                    problem = self._registration_problem(cls, base, hook_name)
                    if problem:
                        self.errors[plugin_name] = LoadError(
                            plugin_name, self._source_of(plugin_name), problem
                        )
                        continue
                    if cls.kind in found and found[cls.kind] is not cls:
                        self.conflicts.append(
                            f"{category[:-1]} {cls.kind!r} of {self._where(plugin_name)} is "
                            f"shadowed by the one of {self._where(owners[cls.kind])}: give one "
                            "of them another `kind`."
                        )
                        continue
                    found[cls.kind] = cls
                    owners[cls.kind] = plugin_name
                    if record is not None:
                        kinds = record.registered.setdefault(category, [])
                        if cls.kind not in kinds:
                            kinds.append(cls.kind)
                collected.clear()
            self._cache[category] = (self._generation, found)
            return found

    @staticmethod
    def _registration_problem(cls: Any, base: type[Any], hook_name: str) -> str | None:
        """Why a registered class cannot be used, or None."""
        kind = getattr(cls, "kind", None)
        if not (isinstance(cls, type) and issubclass(cls, base) and kind):
            return (
                f"{hook_name} registered {cls!r}, which is not a {base.__name__} subclass "
                "with a `kind`."
            )
        if not KIND_NAME.fullmatch(str(kind)):
            # kinds become config keys, metric names and file names: plain names
            return (
                f"{base.__name__} kind {str(kind)[:60]!r} is not a plain name; use letters, "
                "digits and _ (e.g. 'my_task')."
            )
        return None

    def _where(self, plugin_name: str) -> str:
        """A plugin as its author knows it: a dropped-in file by its path."""
        record = self.records.get(plugin_name)
        if record is None:
            return plugin_name
        if record.source == "folder":
            return record.location
        return f"{record.source} {plugin_name!r}"

    def _source_of(self, plugin_name: str) -> str:
        record = self.records.get(plugin_name)
        return record.source if record else "unknown"

    def get(self, category: str, kind: str) -> type[Any]:
        """The class registered as `kind`, or a PluginError listing what exists."""
        found = self.registry(category)
        if kind not in found:
            known = ", ".join(sorted(found)) or "none"
            noun = category[:-1] if category != "strategies" else "strategy"
            raise PluginError(
                f"Unknown {noun} {kind!r}; installed: {known}. "
                "Run `activelab plugins` to see what loaded and what failed."
            )
        return found[kind]

    def describe(self) -> list[PluginRecord]:
        """Every loaded plugin with what it registered (for `activelab plugins`)."""
        with self._lock:
            for category in CATEGORIES:
                self.registry(category)
            return sorted(self.records.values(), key=lambda r: (r.source, r.name))

    # --- lifecycle events --------------------------------------------------------------------

    def _call_each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Exception | None]]:
        """Call each plugin's implementation of a hook through pluggy (so tracing and its
        argument checks apply), one plugin at a time in pluggy's order, so that one failing
        plugin never stops the rest; yields (plugin name, its exception or None)."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()[::-1]  # last registered first
        plugins = {impl.plugin_name: impl.plugin for impl in impls}
        for name in plugins:
            others = [plugin for other, plugin in plugins.items() if other != name]
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            try:
                caller(**kwargs)
            except Exception as exc:
                yield name, exc
            else:
                yield name, None

    def emit(self, hook_name: str, **kwargs: Any) -> None:
        """Call each subscriber of a lifecycle hook; one failing subscriber never stops the rest."""
        for plugin_name, error in self._call_each(hook_name, **kwargs):
            if error is not None:
                log.error(
                    "activelab plugin %s failed in %s", plugin_name, hook_name, exc_info=error
                )

    # --- the lifecycle hooks, typed (what the worker and the models call) ----------------------

    def on_train_start(self, run: RunContext) -> None:
        self.emit("on_train_start", run=run)

    def on_epoch_end(self, run: RunContext, epoch: int, metrics: dict[str, float]) -> None:
        self.emit("on_epoch_end", run=run, epoch=epoch, metrics=metrics)

    def on_checkpoint_saved(self, run: RunContext, epoch: int, artifact_path: str) -> None:
        self.emit("on_checkpoint_saved", run=run, epoch=epoch, artifact_path=artifact_path)

    def on_train_end(self, run: RunContext, status: str, error: BaseException | None) -> None:
        self.emit("on_train_end", run=run, status=status, error=error)

    def on_labels_changed(self, model_id: str, change: dict[str, Any]) -> None:
        self.emit("on_labels_changed", model_id=model_id, change=change)


_host: PluginHost | None = None
_host_lock = threading.Lock()


def get_plugins(tasks_dirs: tuple[Path, ...] | list[Path] = ()) -> PluginHost:
    """The process-wide plugin host (a documented singleton), loaded on first use."""
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
    _host.load(tasks_dirs)
    return _host


def classes_defined_in(module: Any, base: type[C]) -> list[type[C]]:
    """Subclasses of `base` with a `kind` that `module` itself defines (not imports)."""
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, base)
        and obj is not base
        and obj.__module__ == module.__name__
        and getattr(obj, "kind", "")
    ]
