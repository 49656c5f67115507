"""`activelab models ...`: create, list, show, rename, configure, tag, register, delete,
restore."""

from __future__ import annotations

import json
from typing import Any

import click

from activelab.cli.output import emit_json, parse_pairs, table, task_rows
from activelab.humanize import number, relative_time, run_state
from activelab.presets import PRESETS

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def card_row(card: Any) -> dict[str, Any]:
    return {
        "id": card.id,
        "name": card.name,
        "dataset": card.dataset,
        "labeled": card.labeled_count,
        "epochs": card.total_epochs,
        "latest loss": number(card.latest_loss),
        "accuracy": "-" if card.latest_accuracy is None else f"{100 * card.latest_accuracy:.0f} %",
        "training": run_state(card.latest_run_status),
        "created": card.created.astimezone().strftime("%Y-%m-%d %H:%M"),
        "modified": relative_time(card.updated),
        "tags": ", ".join(f"{k}={v}" for k, v in card.tags.items()),
    }


@click.group()
def models() -> None:
    """Create, list and manage models (MLflow experiments)."""


@models.command("create")
@click.argument("name", required=False)
@click.option("--preset", type=click.Choice(list(PRESETS)), default="default", show_default=True)
@click.option("--dataset", default="digits", show_default=True, help="A registered data set.")
@click.option("--description", "-d", default=None, help="Shown in the MLflow UI as the note.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Config override, e.g. lr=1e-4, tasks.kl.weight=0.5, dataset.path=DIR.",
)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A user tag.")
@json_option
@click.pass_obj
def create(
    obj: Any,
    name: str | None,
    preset: str,
    dataset: str,
    description: str | None,
    settings: tuple[str, ...],
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a model (named model-001, model-002, ... unless NAME is given)."""
    model = obj.lab.create_model(
        name,
        preset=preset,
        dataset=dataset,
        description=description,
        config=parse_pairs(settings, "--set"),
        tags=parse_pairs(tags, "--tag"),
    )
    if as_json:
        emit_json(model.card.to_dict())
    else:
        click.echo(
            f"Created model {model.name!r} (id {model.id}, preset {preset}, data set {dataset})."
        )


@models.command("list")
@click.option("--name", "name_contains", default=None, help="Only names containing this text.")
@click.option("--dataset", default=None, help="Only models on this data set.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only models with the tag.")
@click.option("--deleted", is_flag=True, help="List deleted models (the trash) instead.")
@click.option(
    "--sort",
    type=click.Choice(["created", "updated", "name"]),
    default="created",
    show_default=True,
)
@json_option
@click.pass_obj
def list_(
    obj: Any,
    name_contains: str | None,
    dataset: str | None,
    tags: tuple[str, ...],
    deleted: bool,
    sort: str,
    as_json: bool,
) -> None:
    """List models, newest first."""
    cards = obj.lab.list_models(
        name_contains=name_contains,
        dataset=dataset,
        tags=parse_pairs(tags, "--tag"),
        deleted=deleted,
        sort=sort,
    )
    if as_json:
        emit_json([c.to_dict() for c in cards])
        return
    filtered = bool(name_contains or dataset or tags)
    empty = (
        "No models match these filters."
        if filtered
        else "No deleted models."
        if deleted
        else "No models yet. Create one: activelab models create my-first-model"
    )
    table([card_row(c) for c in cards], empty=empty)


@models.command("show")
@click.argument("model")
@click.option("--deleted", is_flag=True, help="Also look in the trash.")
@json_option
@click.pass_obj
def show(obj: Any, model: str, deleted: bool, as_json: bool) -> None:
    """Show a model's card, config and label counts."""
    found = obj.lab.get_model(model, deleted=deleted)
    card = found.card
    config = found.config
    stats = found.labels.stats() if not found.deleted else {}
    if as_json:
        emit_json(
            {
                **card.to_dict(),
                "config": config.to_dict(),
                "label_counts": stats,
                "artifact_location": found.experiment.artifact_location,
            }
        )
        return
    click.echo(f"{card.name}  (id {card.id}{', deleted' if card.deleted else ''})")
    if card.description:
        click.echo(f"  {card.description}")
    click.echo(f"  data set     {card.dataset}   preset {card.preset}")
    click.echo(f"  labeled      {card.labeled_count}")
    click.echo(f"  epochs       {card.total_epochs}   latest loss {number(card.latest_loss)}")
    click.echo(
        f"  created      {card.created.astimezone():%Y-%m-%d %H:%M}   "
        f"modified {relative_time(card.updated)}"
    )
    if card.tags:
        click.echo("  tags         " + ", ".join(f"{k}={v}" for k, v in card.tags.items()))
    if card.registered:
        click.echo(f"  registered   {card.registered.uri}  (version {card.registered.version})")
    click.echo(
        f"  trainer      {config.trainer}: "
        + ", ".join(f"{k}={v}" for k, v in config.trainer_params.items())
    )
    click.echo("  tasks")
    table(task_rows(config, indent="    "))
    if stats:
        click.echo("  labels per class: " + ", ".join(f"{k}: {v}" for k, v in stats.items()))


@models.command("rename")
@click.argument("model")
@click.argument("new_name")
@click.pass_obj
def rename(obj: Any, model: str, new_name: str) -> None:
    """Rename a model."""
    found = obj.lab.get_model(model)
    old = found.name
    found.rename(new_name)
    click.echo(f"Renamed {old!r} to {new_name!r}.")


@models.command("config")
@click.argument("model")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change a setting, e.g. lr=1e-4 or tasks.kl.weight=0.5.",
)
@json_option
@click.pass_obj
def config(obj: Any, model: str, settings: tuple[str, ...], as_json: bool) -> None:
    """Show a model's config, or change it with --set."""
    found = obj.lab.get_model(model)
    cfg = found.update_config(parse_pairs(settings, "--set")) if settings else found.config
    if as_json:
        emit_json(cfg.to_dict())
        return
    for key, value in cfg.flat_params().items():
        click.echo(f"{key} = {value}")


@models.command("describe")
@click.argument("model")
@click.argument("text")
@click.pass_obj
def describe(obj: Any, model: str, text: str) -> None:
    """Set a model's description (the note in the MLflow UI)."""
    obj.lab.get_model(model).set_description(text)
    click.echo("Description saved.")


@models.command("tag")
@click.argument("model")
@click.argument("pairs", nargs=-1, metavar="KEY=VALUE...")
@click.option("--remove", "removals", multiple=True, metavar="KEY", help="Remove a tag.")
@click.pass_obj
def tag(obj: Any, model: str, pairs: tuple[str, ...], removals: tuple[str, ...]) -> None:
    """Add, change or remove a model's user tags."""
    found = obj.lab.get_model(model)
    if pairs:
        found.set_tags(parse_pairs(pairs, "KEY=VALUE"))
    for key in removals:
        found.remove_tag(key)
    shown = ", ".join(f"{k}={v}" for k, v in found.tags.items()) or "none"
    click.echo(f"Tags of {found.name!r}: {shown}")


@models.command("register")
@click.argument("model")
@click.option("--run", default=None, help="The run whose model to register (default: the latest).")
@click.option("--alias", default=None, help="Point this alias at the new version, e.g. champion.")
@json_option
@click.pass_obj
def register(obj: Any, model: str, run: str | None, alias: str | None, as_json: bool) -> None:
    """Put a run's trained model into MLflow's Model Registry under the model's name."""
    made = obj.lab.get_model(model).register(run=run, alias=alias)
    if as_json:
        emit_json({**json.loads(made.to_json()), "uri": made.uri})
        return
    click.echo(f"Registered {made.name!r} version {made.version} from run {made.run_id}.")
    click.echo(f"  load:  mlflow.pyfunc.load_model({made.uri!r})")
    click.echo(f"  serve: mlflow models serve -m {made.uri} --env-manager local")


@models.command("delete")
@click.argument("model")
@click.pass_obj
def delete(obj: Any, model: str) -> None:
    """Delete a model (soft: restore brings it back; its name is free meanwhile)."""
    found = obj.lab.delete_model(model)
    click.echo(f"Deleted {found.name!r}. Undo with: activelab models restore {found.id}")


@models.command("restore")
@click.argument("model")
@click.option("--as", "new_name", default=None, help="Restore under this name.")
@click.pass_obj
def restore(obj: Any, model: str, new_name: str | None) -> None:
    """Restore a deleted model (by id, or by the name it had)."""
    found = obj.lab.restore_model(model, new_name)
    click.echo(f"Restored {found.name!r} (id {found.id}).")
