"""`activelab serve` and `activelab app-path`."""

from __future__ import annotations

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
    )


@click.command("app-path")
def app_path() -> None:
    """Print the app's file, for `panel serve "$(activelab app-path)"`."""
    from activelab.panel_app import app

    click.echo(app.__file__)
