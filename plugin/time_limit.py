"""Plugin code run with a time limit: a task file or an entry point whose import never ends
(a loop at module level, a blocking call) must not hang the CLI, the app or a worker.

The import runs in a thread of its own; past the limit it is reported like any broken plugin,
naming the file and the line it was on, and skipped. The thread is then stopped if it runs
Python code (an exception raised in it); one blocked inside a C call cannot be stopped and is
left behind as a daemon thread (it ends with the process), which the error says.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TypeVar

from activelab.errors import PluginError

log = logging.getLogger(__name__)

TIME_LIMIT_ENV = "ACTIVELAB_PLUGIN_IMPORT_TIMEOUT_S"
DEFAULT_TIME_LIMIT_S = 20.0
STOP_WAIT_S = 1.0  # how long a stopped import gets to unwind

T = TypeVar("T")


class PluginImportTimeout(PluginError):
    """A plugin's import did not finish within the time limit."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class _Stopped(BaseException):
    """Raised inside an import that ran past its limit (a BaseException: plugin code that
    catches Exception does not swallow it)."""


def time_limit_s() -> float:
    """The limit from $ACTIVELAB_PLUGIN_IMPORT_TIMEOUT_S (seconds), else 20 s."""
    raw = os.environ.get(TIME_LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIME_LIMIT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value > 0:
        return value
    log.warning(
        "%s=%r is not a positive number of seconds; using %.0f s.",
        TIME_LIMIT_ENV, raw, DEFAULT_TIME_LIMIT_S,
    )  # fmt: skip
    return DEFAULT_TIME_LIMIT_S


def run_with_time_limit(work: Callable[[], T], what: str, file: str | None = None) -> T:
    """`work()`'s result or exception; PluginImportTimeout when it runs past the limit, saying
    what it was doing (`what`, and the line of `file` it was on, if it was in that file)."""
    limit = time_limit_s()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"activelab-import {what}", daemon=True)
    thread.start()
    thread.join(limit)
    if not thread.is_alive():
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["value"]  # type: ignore[return-value]
    line, code = _where(thread, file)
    stopped = _stop(thread)
    at = f" (at line {line}: `{code}`)" if line is not None and code else ""
    after = (
        "it was stopped"
        if stopped
        else "it is blocked in a call that cannot be interrupted (left until the process ends)"
    )
    raise PluginImportTimeout(
        f"{what} did not finish within {limit:g} s{at}, so the plugin was skipped; {after}. "
        "Module-level code must return quickly (do slow work inside the plugin's methods), "
        f"or allow more time with {TIME_LIMIT_ENV}=SECONDS.",
        line,
    )


def _where(thread: threading.Thread, file: str | None) -> tuple[int | None, str]:
    """The line the thread is on: in `file` if it is inside it, else its innermost frame."""
    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None:
        return None, ""
    stack = traceback.extract_stack(frame)
    inside = [entry for entry in stack if file is not None and entry.filename == file]
    entry = (inside or stack)[-1]
    return entry.lineno, (entry.line or "").strip()


def _stop(thread: threading.Thread) -> bool:
    """Raise _Stopped in `thread` (taken at its next Python instruction); whether it ended."""
    ident = thread.ident
    if ident is None or not thread.is_alive():  # it ended meanwhile: its id may be reused
        return True
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_Stopped))
    thread.join(STOP_WAIT_S)
    return not thread.is_alive()
