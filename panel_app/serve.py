"""`activelab serve`: the app on 127.0.0.1, with the MLflow UI on the same store beside it."""

from __future__ import annotations

import logging
import os
import secrets
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelab.errors import ActivelabError
from activelab.mlflow_server import MlflowServer, free_port, start_mlflow_server
from activelab.panel_app.access import (
    LOOPBACK,
    cookie_secret,
    login_provider,
    refuse_foreign_hosts,
    websocket_origins,
)
from activelab.settings import is_remote

if TYPE_CHECKING:
    from activelab.models import Lab

log = logging.getLogger(__name__)


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        # as the servers bind: a port that only has closed connections lingering is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def start_mlflow_ui(lab: Lab, host: str, port: int) -> MlflowServer | None:
    """The MLflow UI for a local store (None when the store already is a server)."""
    settings = lab.settings
    if is_remote(settings.tracking_uri):
        return None
    if not _port_free(host, port):
        port = free_port(host)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return start_mlflow_server(
        settings.tracking_uri,
        default_artifact_root=settings.artifact_root,
        host=host,
        port=port,
        log_path=logs / "mlflow-ui.log",
    )


def who_can_reach(host: str, login: bool) -> str:
    """Who reaches a server bound to `host`, in words for `serve`'s start-up lines."""
    if host in LOOPBACK:  # as the origins and the no-login warning judge it
        return "this machine only" + (", after logging in" if login else "")
    return "anyone who reaches this machine" + (", after logging in" if login else ", no login")


def login_options(users_file: Path | None, oauth_provider: str | None) -> dict[str, Any]:
    """get_server's options for the login asked for (none: no login)."""
    if users_file and oauth_provider:
        raise ActivelabError("Choose one login: --auth FILE or --oauth-provider NAME.")
    if users_file:
        return {"auth_provider": login_provider(users_file), "cookie_secret": cookie_secret()}
    if oauth_provider:
        missing = [k for k in ("PANEL_OAUTH_KEY", "PANEL_OAUTH_SECRET") if not os.environ.get(k)]
        if missing:
            raise ActivelabError(
                f"--oauth-provider {oauth_provider} needs {' and '.join(missing)} (the client id "
                "and secret the provider gave this app); see Panel's OAuth guide."
            )
        return {"oauth_provider": oauth_provider, "cookie_secret": cookie_secret()}
    return {}


def serve(
    lab: Lab,
    host: str = "127.0.0.1",
    port: int = 5006,
    mlflow_ui: bool = True,
    mlflow_port: int = 5000,
    show: bool = False,
    echo: Any = print,
    allowed_origins: list[str] | None = None,
    users_file: Path | None = None,
    oauth_provider: str | None = None,
) -> None:
    """Serve the app until Ctrl-C; stop everything started here on the way out."""
    from panel.io.server import get_server

    from activelab.panel_app.app import TITLE, build_app, configure_panel
    from activelab.panel_app.context import AppContext, set_context
    from activelab.panel_app.oversized import answer_oversized_requests
    from activelab.panel_app.pages.common import process_stopping

    # refused before anything starts: unnamed origins, a bad users file, half an OAuth setup
    origins = websocket_origins(host, port, allowed_origins or [])
    login = login_options(users_file, oauth_provider)
    if not _port_free(host, port):  # say so before starting anything else
        raise ActivelabError(
            f"Port {port} on {host} is in use (another `activelab serve`?); stop that server "
            f"or pick another port with --port."
        )
    # Create (migrate) the store before the MLflow UI opens it too: two processes migrating
    # one new sqlite file at once make the second fail ("_alembic_tmp_... already exists").
    lab.tracking.ping()
    # MLflow's UI has no login of its own: beside the app's login it would open the store to
    # whoever reaches it, so with a login it is not started (README "Security": MLflow's own)
    local_store = not is_remote(lab.settings.tracking_uri)
    ui_withheld = bool(login) and mlflow_ui and local_store
    ui = start_mlflow_ui(lab, host, mlflow_port) if mlflow_ui and not ui_withheld else None
    ui_url = (
        ui.url
        if ui
        else (lab.settings.tracking_uri if is_remote(lab.settings.tracking_uri) else None)
    )
    context = AppContext(lab, mlflow_ui_url=ui_url)
    if ui is not None:
        context.watch_mlflow_ui(ui.ready)
    set_context(context)
    context.start_watching()
    configure_panel()
    everywhere = host in ("0.0.0.0", "::")
    reach = who_can_reach(host, bool(login))
    echo(f"activelab app:  http://{'<this machine>' if everywhere else host}:{port}/  ({reach})")
    if host not in LOOPBACK and not login:
        echo(f"warning: serving on {host} with no login: anyone who can reach it can use the app.")
    if users_file:
        echo(f"login:          the users in {users_file}")
    elif oauth_provider:
        echo(f"login:          {oauth_provider} (OAuth)")
    if ui is not None:
        ui_reach = who_can_reach(host, False)
        echo(f"MLflow UI:      {ui.url}/  ({ui_reach}; starting, ready in about 10 s)")
    elif ui_withheld:
        echo(
            "MLflow UI:      not started: it has no login of its own and would open the store "
            "to anyone who reaches it. For a shared MLflow UI, run MLflow's server with its "
            "login (`mlflow server --app-name basic-auth`) and point activelab at it "
            "(MLFLOW_TRACKING_URI)."
        )
    elif ui_url:
        echo(f"MLflow UI:      {ui_url}/")
    echo(f"tracking store: {lab.settings.tracking_uri}")
    echo("Ctrl-C stops everything.")

    def stop_on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # `kill` stops everything the same way Ctrl-C does

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        server = get_server(
            {"/": lambda: build_app(context)},
            address=host,
            port=port,
            title=TITLE,
            websocket_origin=origins,
            # Session ids are signed with a key of this process: a made-up id is refused.
            sign_sessions=True,
            secret_key=secrets.token_urlsafe(32),
            admin=False,
            **login,
        )
        refuse_foreign_hosts(server._tornado, origins)
        answer_oversized_requests(server._http)  # a status instead of a reset (431, 400)
        server.start()
        if show:
            server.io_loop.add_callback(server.show, "/login" if login else "/")
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        process_stopping.set()
        context.stop()
        if ui is not None:
            ui.stop()
