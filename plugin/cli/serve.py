"""`activelab serve` and `activelab app-path`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


@click.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind; the default keeps the app on this machine.",
)
@click.option("--port", default=5006, show_default=True, type=int)
@click.option(
    "--mlflow-port",
    default=5000,
    show_default=True,
    type=int,
    help="Port of the MLflow UI (a free one if taken).",
)
@click.option(
    "--allow-origin",
    "allowed_origins",
    multiple=True,
    metavar="HOST[:PORT]",
    help="A name browsers reach the app by (repeatable); required with a --host other than "
    "this machine's loopback, e.g. --allow-origin labeling.example.org:5006.",
)
@click.option(
    "--auth",
    "users_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Require a login: a users file written by `activelab users add` (salted scrypt hashes).",
)
@click.option(
    "--oauth-provider",
    metavar="NAME",
    help="Require a login through an OAuth provider Panel knows (github, google, azure, "
    "generic...); the client id and secret come from $PANEL_OAUTH_KEY and $PANEL_OAUTH_SECRET.",
)
@click.option("--no-mlflow-ui", is_flag=True, help="Do not start the MLflow UI.")
@click.option("--show", is_flag=True, help="Open a browser.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning"]),
    default="warning",
    show_default=True,
    help="How much activelab logs to the console.",
)
@click.pass_obj
def serve(
    obj: Any,
    host: str,
    port: int,
    mlflow_port: int,
    allowed_origins: tuple[str, ...],
    users_file: Path | None,
    oauth_provider: str | None,
    no_mlflow_ui: bool,
    show: bool,
    log_level: str,
) -> None:
    """Serve the app (and the MLflow UI on the same store) until Ctrl-C."""
    import logging

    from activelab.panel_app.serve import serve as run

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("activelab").setLevel(log_level.upper())

    run(
        obj.lab,
        host=host,
        port=port,
        mlflow_ui=not no_mlflow_ui,
        mlflow_port=mlflow_port,
        show=show,
        echo=click.echo,
        allowed_origins=list(allowed_origins),
        users_file=users_file,
        oauth_provider=oauth_provider,
    )


@click.group("users")
def users() -> None:
    """The people who may log in to `activelab serve --auth FILE`."""


@users.command("add")
@click.argument("name")
@click.option(
    "--file",
    "users_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The users file (created if missing, readable by you only).",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from stdin instead of a prompt."
)
def users_add(name: str, users_file: Path, password_stdin: bool) -> None:
    """Add NAME (or set a new password); only a salted hash is stored."""
    from activelab.panel_app.access import add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    new = add_user(users_file, name, password)
    click.echo(f"{'Added' if new else 'Changed the password of'} {name} in {users_file}.")


@click.command("app-path")
def app_path() -> None:
    """Print the app's file, for `panel serve "$(activelab app-path)"`."""
    from activelab.panel_app import app

    click.echo(app.__file__)
