"""The root command: global options, the shared Lab, and error handling."""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import click

from activelab.errors import ActivelabError
from activelab.version import __version__

if TYPE_CHECKING:
    from activelab.models import Lab

DEBUG_ENV = "ACTIVELAB_DEBUG"
SERVER_WAIT_ENV = "ACTIVELAB_SERVER_WAIT_S"


def server_wait_s() -> float:
    """How long a command waits for an unreachable tracking server (default 5 minutes)."""
    return float(os.environ.get(SERVER_WAIT_ENV, "300"))


class LabContext:
    """Builds the Lab on first use, so `--help` never touches MLflow."""

    def __init__(self, tracking_uri: str | None, home: str | None, tasks_dirs: tuple[str, ...]):
        self.tracking_uri = tracking_uri
        self.home = home
        self.tasks_dirs = list(tasks_dirs)
        self._lab: Lab | None = None

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            from activelab.connectivity import fail_fast_http, wait_until_reachable
            from activelab.models import Lab

            fail_fast_http()  # retried here, with a message, instead of MLflow's silent minutes
            lab = Lab(self.tracking_uri, self.home, self.tasks_dirs)
            wait_until_reachable(
                lab.settings.tracking_uri, server_wait_s(), say=lambda m: click.echo(m, err=True)
            )
            self._lab = lab
        return self._lab


class ActivelabGroup(click.Group):
    """Turns activelab's errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ActivelabError as exc:
            _fail(str(exc), exc)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # MLflow errors (e.g. an unreachable server) and the rest
            from activelab.connectivity import refusal_message, refusal_status

            refused = refusal_status(exc)
            if refused is not None:
                _fail(refusal_message(refused, "do this"), exc)
            if isinstance(exc, OSError) and exc.errno in DISK_ADVICE:
                _fail(f"Cannot use {exc.filename or 'a file'}: {exc.strerror}. "
                      f"{DISK_ADVICE[exc.errno]}", exc)  # fmt: skip
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail(f"{type(exc).__name__}: {message}", exc, unexpected=True)


# What a person can do about the local disk errors a command may meet (export, import, serve).
DISK_ADVICE = {
    errno.EROFS: "The file system is read-only: pick a writable place.",
    errno.EACCES: "You have no permission there: pick another place or fix its permissions.",
    errno.EPERM: "You have no permission there: pick another place or fix its permissions.",
    errno.ENOSPC: "The disk is full: free some space and try again.",
    errno.EDQUOT: "Your disk quota is used up: free some space and try again.",
    errno.ENOENT: "It does not exist: check the path.",
    errno.EISDIR: "That is a folder: give a file name.",
}


def _fail(message: str, exc: BaseException, unexpected: bool = False) -> None:
    if os.environ.get(DEBUG_ENV):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.secho(f"error: {message}", fg="red", err=True)
    if unexpected and not os.environ.get(DEBUG_ENV):
        click.echo(f"(set {DEBUG_ENV}=1 for the full traceback)", err=True)
    sys.exit(1)


@click.group(cls=ActivelabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="activelab")
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI (default: the embedded store under the data directory).",
)
@click.option(
    "--home",
    envvar="ACTIVELAB_HOME",
    help="Data directory (default: ~/.activelab).",
)
@click.option(
    "--tasks-dir",
    "tasks_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A folder of task files to load (repeatable; also $ACTIVELAB_TASKS_DIRS).",
)
@click.pass_context
def cli(
    ctx: click.Context, tracking_uri: str | None, home: str | None, tasks_dirs: tuple[str, ...]
) -> None:
    """activelab: semi-supervised and active-learning models, tracked in MLflow."""
    # MLflow announces schema migrations at INFO; people want results, not that.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # Checkpoints are downloaded behind the scenes; our own bars say what is going on.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Through a server, MLflow prints "View run ..." to stdout when a run ends, which would
    # break `--json` output; our commands name the runs they touch themselves.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = LabContext(tracking_uri, home, tasks_dirs)


def _register_commands() -> None:
    from activelab.cli import labels, models, plugins, serve, training

    cli.add_command(models.models)
    cli.add_command(labels.labels)
    cli.add_command(training.train)
    cli.add_command(training.runs)
    cli.add_command(plugins.plugins)
    cli.add_command(plugins.tasks)
    cli.add_command(serve.serve)
    cli.add_command(serve.app_path)
    cli.add_command(serve.users)


_register_commands()


def main() -> None:
    cli(prog_name="activelab")
