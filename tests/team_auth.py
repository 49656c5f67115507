"""A real `mlflow server --app-name basic-auth` with two users, for the team-permission tests.

Nobody may read a model unless its owner or an admin grants it (default_permission
NO_PERMISSIONS); credentials travel the way MLflow documents: MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from activelab.mlflow_server import MlflowServer, start_mlflow_server

ADMIN = ("admin", "admin-password-1234")
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-12"}
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@dataclass
class AuthServer:
    url: str
    server: MlflowServer

    def credentials(self, user: str) -> dict[str, str]:
        password = ADMIN[1] if user == ADMIN[0] else PASSWORDS[user]
        return dict(zip(CREDENTIALS, (user, password), strict=True))

    @contextmanager
    def acting_as(self, user: str) -> Iterator[None]:
        saved = {name: os.environ.get(name) for name in CREDENTIALS}
        os.environ.update(self.credentials(user))
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def grant(self, model_id: str, user: str, permission: str) -> None:
        from mlflow.exceptions import RestException
        from mlflow.server.auth.client import AuthServiceClient

        with self.acting_as(ADMIN[0]):
            client = AuthServiceClient(self.url)
            try:
                client.grant_user_permission(user, "experiment", model_id, permission)
            except RestException as exc:  # a change of level: the old grant goes first
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                client.revoke_user_permission(user, "experiment", model_id)
                client.grant_user_permission(user, "experiment", model_id, permission)


def start_auth_server(root: Path) -> AuthServer:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'users.db'}\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # each request checks the password (PBKDF2, tens of ms): cache a good check a minute,
        # as MLflow advises for request-heavy use
        "auth_cache_ttl_seconds = 60\n"
    )
    server = start_mlflow_server(
        f"sqlite:///{root / 'store.db'}",
        artifacts_destination=str(root / "artifacts"),
        log_path=root / "server.log",
        app_name="basic-auth",
        extra_env={
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
        },
    ).wait_ready()
    auth = AuthServer(server.url, server)
    from mlflow.server.auth.client import AuthServiceClient

    with auth.acting_as(ADMIN[0]):
        client = AuthServiceClient(server.url)
        for user, password in PASSWORDS.items():
            client.create_user(user, password)
    return auth
