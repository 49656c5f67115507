"""Who may reach the served app: the names it answers to, and an optional login.

- Websockets and HTTP requests are accepted only for the names the app was started for
  (loopback names by default), so a foreign site cannot drive it, even by pointing a name of
  its own at this machine (DNS rebinding).
- `--auth FILE` puts Panel's login page in front of every page; FILE holds salted scrypt hashes
  written by `activelab users add` (Panel's own basic auth compares plain-text passwords).
- `--oauth-provider NAME` uses Panel's OAuth providers with Panel's own settings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from activelab.errors import ActivelabError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def websocket_origins(host: str, port: int, allowed: list[str]) -> list[str]:
    """The names browsers may open the app by: loopback names on a loopback host; on any other
    interface only the names given (never '*': any site could then drive the app)."""
    if host in LOOPBACK:
        return [f"{name}:{port}" for name in ("127.0.0.1", "localhost")] + [
            _with_port(origin, port) for origin in allowed
        ]
    if not allowed:
        raise ActivelabError(
            f"Serving on {host} needs the names people open the app by, e.g. "
            f"--allow-origin labeling.example.org:{port} (repeatable); without them any site a "
            "person visits could drive the app."
        )
    if any(origin.strip() in ("*", "") for origin in allowed):
        raise ActivelabError("--allow-origin takes host names, not '*'.")
    return [_with_port(origin, port) for origin in allowed]


def _with_port(origin: str, port: int) -> str:
    return origin.lower() if ":" in origin else f"{origin.lower()}:{port}"


def refuse_foreign_hosts(tornado_app: Any, allowed: list[str]) -> None:
    """Answer 403 to any HTTP request whose Host header is not one of `allowed` (host:port).

    Bokeh checks the Origin of websockets only; a rebound name could still read the pages."""
    import tornado.web
    from tornado.routing import Matcher, Rule

    names = {name.lower() for name in allowed}

    class ForeignHost(Matcher):
        def match(self, request: Any) -> dict | None:
            return None if request.host.lower() in names else {}

    class Refuse(tornado.web.RequestHandler):
        def prepare(self) -> None:
            raise tornado.web.HTTPError(403, "unknown host name")

    # first rule of the top router: seen before any of Bokeh's or Panel's handlers
    tornado_app.default_router.rules.insert(0, Rule(ForeignHost(), Refuse))


# ------------------------------------------------------------------ the users file

SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # OWASP's minimum for scrypt; ~50 ms per check


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    params = f"{SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}"
    return f"scrypt${params}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_users(path: Path) -> dict[str, str]:
    """name -> hash; a clear error for a missing or malformed file."""
    try:
        users = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ActivelabError(
            f"No users file at {path}; create it with `activelab users add NAME --file {path}`."
        ) from None
    except (OSError, ValueError) as exc:
        raise ActivelabError(f"Cannot read the users file {path}: {exc}") from None
    if not isinstance(users, dict) or not all(
        isinstance(name, str) and isinstance(value, str) and value.startswith("scrypt$")
        for name, value in users.items()
    ):
        raise ActivelabError(
            f"{path} is not an activelab users file (name -> scrypt hash); write it with "
            "`activelab users add`."
        )
    if not users:
        raise ActivelabError(f"{path} names no users; add one with `activelab users add`.")
    return users


def add_user(path: Path, name: str, password: str) -> bool:
    """Add or replace a user; True when the name was new. Written 0600, atomically."""
    if not name or not name.isprintable() or name != name.strip():
        raise ActivelabError("A user name is printable text without surrounding spaces.")
    if len(password) < 8:
        raise ActivelabError("Use a password of at least 8 characters.")
    path = Path(path)
    users = read_users(path) if path.exists() else {}
    new = name not in users
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(users, out, indent=1, sort_keys=True)
    os.replace(temp, path)
    return new


def login_provider(users_file: Path) -> Any:
    """Panel's basic-auth login page, checking passwords against `users_file`'s hashes.

    The file is read at each login, so users added while the app runs can log in."""
    from panel.auth import BasicAuthProvider, BasicLoginHandler

    read_users(users_file)  # a bad file is refused before the server starts

    class HashedLoginHandler(BasicLoginHandler):
        def _validate(self, username: str, password: str) -> bool:
            stored = read_users(users_file).get(username)
            # an unknown name costs the same hash as a known one: timing tells no names
            return password_matches(password, stored or _decoy_hash()) and stored is not None

    class HashedBasicAuthProvider(BasicAuthProvider):
        @property
        def login_handler(self) -> Any:
            HashedLoginHandler._login_endpoint = self._login_endpoint
            HashedLoginHandler._login_template = self._login_template
            return HashedLoginHandler

    return HashedBasicAuthProvider()


_DECOY: list[str] = []


def _decoy_hash() -> str:
    if not _DECOY:
        _DECOY.append(hash_password(secrets.token_urlsafe(16)))
    return _DECOY[0]


def cookie_secret() -> str:
    """Panel's cookie secret when set (logins survive a restart), else one for this process."""
    return os.environ.get("PANEL_COOKIE_SECRET") or secrets.token_urlsafe(32)
