"""Is the tracking server there? A one-second probe, a bounded wait that says what it does,
and HTTP settings that fail fast so activelab (not MLflow's ~4 minute silent retry) decides
how to wait and what to tell the person.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import TYPE_CHECKING

from activelab.errors import ActivelabError, PermissionDeniedError, ServerUnreachableError
from activelab.settings import is_remote

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

UNREACHABLE = "tracking server unreachable, retrying"
# MLflow's defaults retry a refused connection 7 times with backoff 2 (~4 minutes, silent).
FAST_FAILURE_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


# MLflow error codes that mean "try again later" rather than "this request is wrong".
TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


# Errors of the local disk that waiting does not cure.
LOCAL_STORAGE_ERRNOS = {
    errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT,
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
}  # fmt: skip


def is_transient(exc: BaseException) -> bool:
    """True for "the server did not answer" (retry), False for "the server refused this"."""
    import requests
    from mlflow.exceptions import MlflowException

    if refusal_status(exc) is not None:  # no permission: waiting does not grant one
        return False
    if isinstance(exc, MlflowException):
        # a failed connection is MlflowException("API request ... failed"), INTERNAL_ERROR
        return exc.error_code in TRANSIENT_CODES
    if isinstance(exc, requests.RequestException):
        return True
    # a refused or reset connection is an OSError too; a read-only or full disk is not
    return isinstance(exc, OSError) and exc.errno not in LOCAL_STORAGE_ERRNOS


def refusal_status(exc: BaseException) -> int | None:
    """401 or 403 when the tracking server (MLflow's auth app) refused the caller, else None.

    MLflow reports them as MlflowException with the status in its text (the auth app answers
    in plain text) or, for artifact uploads, as requests' HTTPError."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return status
    text = str(exc)
    for status, markers in ((403, ("error code 403", "PERMISSION_DENIED")),
                            (401, ("error code 401", "UNAUTHENTICATED"))):  # fmt: skip
        if any(marker in text for marker in markers):
            return status
    return None


def refusal_message(status: int, action: str, needs: str = "READ") -> str:
    """What a refused person reads: who they are to the server and what to ask for."""
    if status == 401:
        return (
            "The tracking server wants a login: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (they are missing or wrong) and try again."
        )
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user {user!r}" if user else "you"
    return (
        f"The tracking server does not allow {who} to {action}: ask the model's owner or an "
        f"MLflow admin for {needs} permission on it."
    )


@contextmanager
def explain_refusal(action: str, needs: str = "READ") -> Iterator[None]:
    """Turn the server's 401/403 into a PermissionDeniedError that says what to ask for."""
    try:
        yield
    except ActivelabError:
        raise
    except Exception as exc:
        status = refusal_status(exc)
        if status is None:
            raise
        raise PermissionDeniedError(refusal_message(status, action, needs)) from exc


def fail_fast_http() -> None:
    """Make MLflow's HTTP calls in this process give up after ~3 s (unless set already);
    callers retry on their own terms with a message."""
    for name, value in FAST_FAILURE_ENV.items():
        os.environ.setdefault(name, value)


def server_reachable(uri: str, timeout_s: float = 1.0) -> bool:
    """True when `uri` is no server (a local store) or its /health answers within timeout."""
    if not is_remote(uri):
        return True
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_reachable(
    uri: str,
    bound_s: float,
    say: Callable[[str], None],
    poll_s: float = 1.0,
) -> None:
    """Return once the server answers; say so within a second when it does not, and raise
    ConnectionError after `bound_s` seconds."""
    if server_reachable(uri):
        return
    started = time.monotonic()
    say(f"{UNREACHABLE} ({uri}; giving up after {bound_s:.0f} s, Ctrl-C to stop)")
    while time.monotonic() - started < bound_s:
        time.sleep(poll_s)  # the probe itself times out after 1 s
        if server_reachable(uri):
            say(f"tracking server reachable again after {time.monotonic() - started:.0f} s")
            return
    raise ServerUnreachableError(
        f"The tracking server at {uri} did not answer for {bound_s:.0f} s. Check that it runs "
        "(`mlflow server ...`) and that the address is right, then try again."
    )


class Outage:
    """One waiting loop's view of the server: it says "unreachable, retrying" at the first
    failure, "reachable again" after, and gives up with a clear error past `bound_s`."""

    def __init__(self, uri: str, say: Callable[[str], None], bound_s: float) -> None:
        self.uri = uri
        self.say = say
        self.bound_s = bound_s
        self.since: float | None = None

    def failed(self, exc: BaseException) -> None:
        """Call from an `except`: re-raises what is no outage, or an outage past the bound."""
        if not is_transient(exc):
            raise exc
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self.say(f"{UNREACHABLE} ({self.uri})")
        elif now - self.since > self.bound_s:
            raise ServerUnreachableError(
                f"The tracking server at {self.uri} did not answer for {self.bound_s:.0f} s. "
                "Check that it runs and that the address is right, then try again."
            ) from exc

    def ok(self) -> None:
        if self.since is not None:
            self.say(f"tracking server reachable again after {time.monotonic() - self.since:.0f} s")
            self.since = None


class ServerHealth:
    """Probes a tracking server twice a second in a thread (the app shows a banner from it);
    `down_since` is the monotonic time of the first failed probe, or None."""

    def __init__(self, uri: str, period_s: float = 0.5) -> None:
        self.uri = uri
        self.period_s = period_s
        self.down_since: float | None = None
        self._stop = threading.Event()

    def start(self) -> ServerHealth:
        if is_remote(self.uri):
            threading.Thread(target=self._run, name="activelab-server-health", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            if server_reachable(self.uri):
                self.down_since = None
            elif self.down_since is None:
                self.down_since = time.monotonic()

    def message(self) -> str | None:
        """What to tell the person, or None while the server answers."""
        since = self.down_since
        if since is None:
            return None
        return f"Tracking server unreachable, retrying… ({time.monotonic() - since:.0f} s)"
