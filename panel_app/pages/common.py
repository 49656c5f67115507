"""What every page shares: the `Page` base (shown/left, a poll while shown), escaping, small HTML
pieces (banners, saved/failed notes), and running work off the request path (`UiThread`)."""

from __future__ import annotations

import functools
import html
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import panel as pn

# the same wording as the CLI
from activelab.errors import ActivelabError
from activelab.humanize import duration, relative_time, run_state  # noqa: F401
from activelab.humanize import number as fmt  # noqa: F401
from activelab.panel_app.vm.home import describe_error

if TYPE_CHECKING:
    from panel.io.callbacks import PeriodicCallback

    from activelab.panel_app.vm.state import AppState

log = logging.getLogger(__name__)

# Set once the server has stopped serving. While the interpreter exits, a poll still running
# in a daemon thread can fail in odd ways (a thread pool refuses new work after its shutdown):
# no one is left to see the result, so that is not a fault worth a traceback.
process_stopping = threading.Event()


def esc(value: Any) -> str:
    """User-provided text shown in HTML is always escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def banner(text: Any) -> str:
    """A message across the page (an error, a notice); `text` is escaped."""
    return f"<div class='al-banner'>{esc(text)}</div>"


def error_banner(exc: BaseException) -> str:
    """An error as the person reads it (the same wording as the CLI), across the page."""
    return banner(describe_error(exc))


def note(text: Any, ok: bool = True) -> str:
    """A one-line outcome beside the control that caused it ("Saved ...", an error)."""
    return f"<span class='{'al-ok' if ok else 'al-error'}'>{esc(text)}</span>"


def status_badge(status: str | None) -> str:
    if not status:
        return ""
    kind = {"RUNNING": "running", "FAILED": "failed", "FINISHED": "finished"}.get(status, "")
    text = run_state(status)
    return f'<span class="al-badge {kind}">{esc(text)}</span>'


class UiThread:
    """Runs slow work in a thread and applies its result in the session's own thread.

    Bokeh models may only change under the document lock; Panel objects schedule themselves,
    raw Bokeh models (the scatter's data source) do not.
    """

    def __init__(self) -> None:
        self.doc = pn.state.curdoc
        # the session's own thread (the server's event loop), where the lock is held
        self.session_thread = threading.get_ident()
        # once the browser has left (reload, navigation), late results of threads are dropped
        self.closed = threading.Event()
        self._serial = threading.RLock()
        if self.doc is not None and self.doc.session_context is not None:
            self.doc.on_session_destroyed(lambda context: self.closed.set())

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` with the document lock: now if we are in the session's own thread, else
        on its next tick. (Panel's `curdoc` can name the session from a worker thread too,
        so it does not tell whether the lock is held; the thread does.)"""
        doc = self.doc
        if doc is None:  # no session (a script, a test): results still apply one at a time
            with self._serial:
                fn()
        elif threading.get_ident() == self.session_thread and pn.state.curdoc is doc:
            fn()
        else:
            self._on_next_tick(fn)

    def next_tick(self, fn: Callable[[], None]) -> None:
        """Run `fn` with the document lock on the session's next tick, whatever thread or
        callback asks (Panel runs a browser change marked as priority without the lock)."""
        if self.doc is None or self.doc.session_context is None:
            self.call(fn)
        else:
            self._on_next_tick(fn)

    def _on_next_tick(self, fn: Callable[[], None]) -> None:
        if self.closed.is_set():
            return
        try:
            self.doc.add_next_tick_callback(fn)  # type: ignore[union-attr]
        except AttributeError:  # destroyed between the check and the call: nobody to tell
            log.debug("session gone; dropped a late update")

    def background(
        self,
        work: Callable[[], Any],
        done: Callable[[Any], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
    ) -> threading.Thread:
        def run() -> None:
            try:
                result = work()
            except BaseException as exc:
                if process_stopping.is_set():
                    log.debug("Background work ended by the server stopping: %s", exc)
                    return
                # our own errors are messages for the person (shown by `failed`), not bugs
                expected = isinstance(exc, ActivelabError)
                log.warning("Background work failed: %s", exc, exc_info=not expected)
                if failed is not None:
                    self.call(functools.partial(failed, exc))
                return
            if done is not None:
                self.call(lambda: done(result))

        thread = threading.Thread(target=run, daemon=True)
        if self.doc is not None and pn.state.curdoc is self.doc and not pn.state.loaded:
            # While the session is being created the page is not in the browser yet, and
            # changes made before it connects can be lost: start once it is loaded.
            pn.state.onload(thread.start)
        else:
            thread.start()
        return thread


class Page(pn.viewable.Viewer):
    """One page of the app: the shell shows it (`activate`) and leaves it (`deactivate`).

    A page overrides `shown` (bring what it displays up to date) and, if it sets `poll_ms`,
    `poll`, which runs every `poll_ms` while the page is shown and never after it was left.
    `model_changed` is called when the model in use changes while the page is shown.
    """

    poll_ms: ClassVar[int | None] = None

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.ui = UiThread()
        self.active = False
        self._periodic: PeriodicCallback | None = None

    def activate(self) -> None:
        self.active = True
        self.ui = UiThread()  # the session that shows the page now
        self.shown()
        if self.poll_ms and self._periodic is None:
            self._periodic = pn.state.add_periodic_callback(self.poll, period=self.poll_ms)

    def deactivate(self) -> None:
        self.active = False
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None

    def shown(self) -> None:
        """The page is shown (again): refresh what it displays."""

    def poll(self) -> None:
        """Every `poll_ms` while shown: pick up what changed elsewhere."""

    def model_changed(self) -> None:
        """The model in use changed while this page is shown."""
