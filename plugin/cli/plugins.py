"""`activelab plugins` and `activelab tasks ...`: what is installed, and a model's loss terms."""

from __future__ import annotations

from typing import Any

import click

from activelab.cli.output import emit_json, parse_pairs, table, task_rows
from activelab.plugins import CATEGORIES as PLUGIN_CATEGORIES

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
CATEGORIES = list(PLUGIN_CATEGORIES)
CATEGORY_CHOICE = click.Choice(CATEGORIES)


@click.group("plugins", invoke_without_command=True)
@json_option
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List plugins: source (entry point, built-in, folder), version, what they register,
    their hooks, and load errors."""
    if ctx.invoked_subcommand is not None:
        return
    host = ctx.obj.lab.plugins
    records = host.describe()
    errors = list(host.errors.values())
    if as_json:
        emit_json(
            {
                "plugins": [r.to_dict() for r in records],
                "errors": [e.to_dict() for e in errors],
                "conflicts": host.conflicts,
            }
        )
        return
    table(
        [
            {
                "plugin": r.name if r.source != "folder" else r.location.rsplit("/", 1)[-1],
                "source": r.source,
                "version": r.version or "-",
                "registers": "; ".join(f"{c}: {', '.join(k)}" for c, k in r.registered.items())
                or "-",
                "hooks": ", ".join(h for h in r.hooks if not h.startswith("register_")) or "-",
            }
            for r in records
        ]
    )
    for error in errors:
        click.secho(f"failed: {error}", fg="red", err=True)
    for conflict in host.conflicts:
        click.echo(f"note: {conflict}", err=True)


@plugins.command("show")
@click.argument("kind")
@click.option(
    "--category",
    type=CATEGORY_CHOICE,
    default=None,
    help="Where to look when a kind exists in several categories.",
)
@json_option
@click.pass_obj
def show(obj: Any, kind: str, category: str | None, as_json: bool) -> None:
    """The declared parameters of a task, trainer, data set or strategy."""
    host = obj.lab.plugins
    categories = [category] if category else CATEGORIES
    for name in categories:
        cls = host.registry(name).get(kind)
        if cls is None:
            continue
        specs = cls.param_specs(include_common=True)
        if as_json:
            emit_json(
                {
                    "kind": kind,
                    "category": name,
                    "summary": cls.summary(),
                    "params": [s.to_dict() for s in specs],
                }
            )
            return
        click.echo(f"{kind} ({name[:-1] if name != 'strategies' else 'strategy'}): {cls.summary()}")
        table(
            [
                {
                    "param": s.name,
                    "type": s.type,
                    "default": s.default,
                    "range": s.choices or s.bounds or "",
                    "doc": s.doc,
                }
                for s in specs
            ],
            empty="  (no parameters)",
        )
        return
    raise click.ClickException(f"No plugin registers {kind!r}; `activelab plugins` lists them.")


@click.group("tasks")
def tasks() -> None:
    """A model's tasks (loss terms): list, add, change, remove."""


@tasks.command("list")
@click.argument("model")
@json_option
@click.pass_obj
def list_(obj: Any, model: str, as_json: bool) -> None:
    """The tasks of MODEL."""
    config = obj.lab.get_model(model).config
    if as_json:
        emit_json([t.to_dict() for t in config.tasks])
    else:
        table(task_rows(config), empty="No tasks.")


@tasks.command("add")
@click.argument("model")
@click.argument("kind")
@click.option("--name", default=None, help="Name of the task in this model (default: KIND).")
@click.option("--weight", default="1.0", show_default=True)
@click.option("--slice", "latent_slice", default=None, metavar="START:END")
@click.option("--disabled", is_flag=True)
@click.option("--set", "settings", multiple=True, metavar="PARAM=VALUE")
@click.pass_obj
def add(
    obj: Any,
    model: str,
    kind: str,
    name: str | None,
    weight: str,
    latent_slice: str | None,
    disabled: bool,
    settings: tuple[str, ...],
) -> None:
    """Add a task of class KIND to MODEL."""
    config = obj.lab.get_model(model).add_task(
        kind, name=name, weight=weight, enabled=not disabled, latent_slice=latent_slice,
        params=parse_pairs(settings, "--set"),
    )  # fmt: skip
    table(task_rows(config))


@tasks.command("set")
@click.argument("model")
@click.argument("name")
@click.option("--weight", default=None)
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--slice", "latent_slice", default=None, metavar="START:END ('' for all)")
@click.option("--set", "settings", multiple=True, metavar="PARAM=VALUE")
@click.pass_obj
def set_(
    obj: Any,
    model: str,
    name: str,
    weight: str | None,
    enabled: bool | None,
    latent_slice: str | None,
    settings: tuple[str, ...],
) -> None:
    """Change a task's weight, switch it on or off, set its latent slice or parameters."""
    overrides: dict[str, Any] = {
        f"tasks.{name}.{k}": v for k, v in parse_pairs(settings, "--set").items()
    }
    if weight is not None:
        overrides[f"tasks.{name}.weight"] = weight
    if enabled is not None:
        overrides[f"tasks.{name}.enabled"] = enabled
    if latent_slice is not None:
        overrides[f"tasks.{name}.latent_slice"] = latent_slice or None
    config = obj.lab.get_model(model).update_config(overrides)
    table(task_rows(config))


@tasks.command("remove")
@click.argument("model")
@click.argument("name")
@click.pass_obj
def remove(obj: Any, model: str, name: str) -> None:
    """Remove the task NAME from MODEL."""
    config = obj.lab.get_model(model).remove_task(name)
    table(task_rows(config), empty="No tasks left.")
