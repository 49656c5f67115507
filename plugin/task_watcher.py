"""Hot reload of user task folders: save a `.py` file and its tasks are available, no restart.

watchdog delivers native file events (inotify on Linux); each path is debounced briefly so an
editor's several writes become one reload, then the file is (re)imported, or dropped if it was
deleted. A file that fails to import is reported (file, line, message); the rest keep working.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

if TYPE_CHECKING:
    from activelab.plugins import PluginHost

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.05


class _Handler(FileSystemEventHandler):
    def __init__(self, registry: TaskRegistry) -> None:
        self.registry = registry

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw and str(raw).endswith(".py"):
                self.registry.schedule(Path(str(raw)))


class TaskRegistry:
    """Watches task folders and keeps the plugin host in step with the files in them."""

    def __init__(self, host: PluginHost, folders: list[Path] | tuple[Path, ...]) -> None:
        self.host = host
        self.folders = [Path(f).expanduser().resolve() for f in folders]
        self._observer: BaseObserver | None = None
        self._timers: dict[Path, threading.Timer] = {}
        self._lock = threading.Lock()

    def start(self) -> TaskRegistry:
        """Load what the folders hold now, then follow their changes."""
        if self._observer is not None:
            return self
        observer = Observer()
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
            observer.schedule(_Handler(self), str(folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        for folder in self.folders:
            for path in sorted(folder.glob("*.py")):
                self.host.load_file(path)
        return self

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    def schedule(self, path: Path) -> None:
        """Reload `path` shortly (repeated events for one save collapse into one reload)."""
        path = path.resolve()
        if path.name.startswith(".") or path.parent not in self.folders:
            return
        with self._lock:
            previous = self._timers.pop(path, None)
            if previous is not None:
                previous.cancel()
            timer = threading.Timer(DEBOUNCE_S, self._reload, args=(path,))
            timer.daemon = True
            self._timers[path] = timer
            timer.start()

    def _reload(self, path: Path) -> None:
        with self._lock:
            self._timers.pop(path, None)
        try:
            if path.exists():
                error = self.host.load_file(path)
                if error is not None:
                    log.warning("Task file not loaded: %s", error)
            else:
                self.host.unload_file(path)
        except Exception:
            log.exception("Reloading %s failed", path)

    def __enter__(self) -> TaskRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
