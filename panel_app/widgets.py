"""Small browser-side pieces: keyboard shortcuts, the address bar and the lost-connection watch."""

from __future__ import annotations

from typing import ClassVar

import param
from panel.custom import JSComponent


class KeyListener(JSComponent):
    """Sends key presses on the page (outside text fields) to Python as `key` / `presses`."""

    key = param.String(default="")
    presses = param.Integer(default=0)

    # Panel holds a change from the browser 50 ms in case more follow; a key press is one
    # change and the person waits for its answer, so it goes at once (~55 ms of a ~95 ms
    # round trip, measured here). Panel then runs the watchers without the document lock:
    # a watcher that changes Bokeh models hands its work to the session's next tick.
    _priority_changes: ClassVar[list[str]] = ["key", "presses"]

    _esm = """
    export function render({ model }) {
      const handler = (event) => {
        const target = event.composedPath()[0];
        const tag = target && target.tagName;
        if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' ||
            (target && target.isContentEditable)) return;
        let key = event.key;
        if ((event.ctrlKey || event.metaKey) && (key === 'z' || key === 'Z' || key === 'y')) {
          key = (event.shiftKey || key === 'y') ? 'redo' : 'undo';
          event.preventDefault();
        } else if (event.ctrlKey || event.metaKey || event.altKey) {
          return;
        }
        model.key = key;
        model.presses = model.presses + 1;
      };
      document.addEventListener('keydown', handler);
      model.on('remove', () => document.removeEventListener('keydown', handler));
      const el = document.createElement('span');
      el.className = 'al-keys';
      return el;
    }
    """


class UrlSync(JSComponent):
    """Keeps the address bar in step with the page and model in use, and Back/Forward with the
    app. (Panel's own location sync defers writes until the document is idle, and one was
    seen never to arrive; this writes at once.)"""

    page = param.String(default="")
    model = param.String(default="")

    _esm = """
    export function render({ model }) {
      const write = () => {
        const url = new URL(window.location.href);
        for (const [key, value] of [['page', model.page], ['model', model.model]]) {
          if (value) url.searchParams.set(key, value); else url.searchParams.delete(key);
        }
        if (url.href !== window.location.href) window.history.pushState({}, '', url.href);
      };
      const read = () => {
        const query = new URLSearchParams(window.location.search);
        model.model = query.get('model') || '';
        model.page = query.get('page') || 'home';
      };
      model.on(['page', 'model'], write);
      window.addEventListener('popstate', read);
      // A safety net: twice a second, an address that lags the page is written. (A change
      // event was seen to go missing under heavy load: the page showed, the address stayed.)
      const check = setInterval(write, 500);
      model.on('remove', () => {
        window.removeEventListener('popstate', read);
        clearInterval(check);
      });
      write();
      return document.createElement('span');
    }
    """


class ConnectionWatch(JSComponent):
    """Says so when the browser loses the server, and reloads the page once it is back."""

    # A tiny file every Panel server serves; fetching it creates no session.
    path = param.String(default="/static/extensions/panel/images/icon-16x16.png")

    _esm = """
    export function render({ model }) {
      let lost = false;
      const banner = document.createElement('div');
      banner.className = 'al-offline';
      banner.textContent =
        'Lost the connection to the activelab server; waiting for it to come back…';
      banner.style.display = 'none';
      document.body.appendChild(banner);
      const check = async () => {
        try {
          const response = await fetch(model.path, { cache: 'no-store' });
          if (!response.ok) throw new Error(String(response.status));
          if (lost) { window.location.reload(); }
        } catch (error) {
          lost = true;
          banner.style.display = 'block';
        }
      };
      const timer = setInterval(check, 2000);
      model.on('remove', () => { clearInterval(timer); banner.remove(); });
      return document.createElement('span');
    }
    """
