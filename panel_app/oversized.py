"""Requests too large to read get an HTTP status, not a dropped connection.

Tornado reads a request's headers up to a limit (64 KB) and, past it, closes the connection
with nothing sent: the browser shows "connection reset" and nobody learns why (a cookie grown
too big, a proxy adding headers). Here such a connection is answered `431 Request Header
Fields Too Large` (400 for other unreadable framing) with a one-line text before it closes.

Closing a socket with unread input makes Linux send a reset that can destroy the answer
before the client reads it, so the answer is followed by a half-close and the rest of the
request is read and dropped for a bounded time and size.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

from tornado.iostream import IOStream, UnsatisfiableReadError

DRAIN_SECONDS = 2.0  # at most this long spent reading the rest of a refused request
DRAIN_BYTES = 16 * 2**20  # nor more than this much


def answer(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


HEADERS_TOO_LARGE = answer(
    431,
    "Request Header Fields Too Large",
    "The request's headers are too large (over 64 KB). Clear this site's cookies, "
    "or remove the extra headers a proxy or script adds, and try again.\n",
)
UNREADABLE = answer(400, "Bad Request", "The request could not be read.\n")


class AnsweringStream(IOStream):
    """An IOStream that answers the request it gives up reading instead of just closing."""

    def close(self, exc_info: Any = False) -> None:
        error = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(error, UnsatisfiableReadError) and not self.closed():
            headers = self._read_regex is not None  # Tornado reads only headers by a regex
            try:
                kept = self.socket.dup()  # outlives Tornado's close of the original
            except OSError:
                kept = None
            super().close(exc_info)
            if kept is not None:
                _answer_and_drain(kept, HEADERS_TOO_LARGE if headers else UNREADABLE)
            return
        super().close(exc_info)


def _answer_and_drain(sock: socket.socket, response: bytes) -> None:
    from tornado.ioloop import IOLoop

    loop = IOLoop.current()
    try:
        sock.setblocking(False)
        sock.send(response)  # a few hundred bytes: the kernel's send buffer takes them at once
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        sock.close()
        return
    deadline = time.monotonic() + DRAIN_SECONDS
    budget = [DRAIN_BYTES]

    def finish() -> None:
        if sock.fileno() >= 0:
            loop.remove_handler(sock)
            sock.close()

    def drain(_fd: Any, _events: int) -> None:
        try:
            while budget[0] > 0:
                chunk = sock.recv(65536)
                if not chunk:  # the client read the answer and closed
                    finish()
                    return
                budget[0] -= len(chunk)
        except BlockingIOError:
            if time.monotonic() < deadline:
                return
        except OSError:
            pass
        finish()

    loop.add_handler(sock, drain, IOLoop.READ)
    loop.call_later(DRAIN_SECONDS, finish)


def answer_oversized_requests(http_server: Any) -> None:
    """Make `http_server` (a Tornado HTTPServer) answer requests it cannot read."""
    handle_stream = http_server.handle_stream

    def handle_answering(stream: IOStream, address: Any) -> Any:
        if type(stream) is IOStream:  # plain TCP; TLS streams are left as they are
            stream.__class__ = AnsweringStream
        return handle_stream(stream, address)

    http_server.handle_stream = handle_answering
