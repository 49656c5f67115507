"""`activelab labels ...`: set, clear, undo, redo, import, export and count labels, and ask a
query strategy which samples to label next."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from activelab.cli.output import emit_json, table
from activelab.labels import decode_csv

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def parse_indices(items: tuple[str, ...]) -> list[int]:
    """ "12" and inclusive ranges "10-20" -> sample indices."""
    indices: list[int] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            low, sep, high = part.partition("-")
            try:
                if sep and low:
                    start, end = int(low), int(high)
                    if end < start:
                        raise ValueError
                    indices.extend(range(start, end + 1))
                else:
                    indices.append(int(part))
            except ValueError:
                raise click.BadParameter(
                    f"{part!r} is not a sample index or a range like 10-20", param_hint="INDEX"
                ) from None
    return indices


def _report(event: Any, done: str, unchanged: str) -> None:
    if event is None:
        click.echo(f"Nothing changed: {unchanged}.")
    else:
        click.echo(f"Saved: {len(event.changes)} sample(s) {done} (change {event.id}).")


@click.group()
def labels() -> None:
    """Label samples of a model; every change is saved to MLflow when the command returns."""


@labels.command("set")
@click.argument("model")
@click.argument("label")
@click.argument("indices", nargs=-1, required=True, metavar="INDEX...")
@click.pass_obj
def set_(obj: Any, model: str, label: str, indices: tuple[str, ...]) -> None:
    """Give LABEL (a class name or index) to the samples INDEX... (ranges like 10-20 work)."""
    event = obj.lab.get_model(model).labels.set_many(parse_indices(indices), label)
    _report(event, f"labeled {label!r}", f"the samples were already labeled {label!r}")


@labels.command("clear")
@click.argument("model")
@click.argument("indices", nargs=-1, metavar="INDEX...")
@click.option("--all", "clear_all", is_flag=True, help="Clear every label of the model.")
@click.pass_obj
def clear(obj: Any, model: str, indices: tuple[str, ...], clear_all: bool) -> None:
    """Remove the labels of samples INDEX... (or --all; undo brings them back)."""
    store = obj.lab.get_model(model).labels
    if clear_all:
        event = store.clear_all()
    elif indices:
        event = store.clear(parse_indices(indices))
    else:
        raise click.UsageError("Give sample indices to clear, or --all.")
    _report(event, "cleared", "the samples had no label")


@labels.command("undo")
@click.argument("model")
@click.pass_obj
def undo(obj: Any, model: str) -> None:
    """Revert the latest label change."""
    event = obj.lab.get_model(model).labels.undo()
    click.echo(f"Undone: {len(event.changes)} sample(s) restored.")


@labels.command("redo")
@click.argument("model")
@click.pass_obj
def redo(obj: Any, model: str) -> None:
    """Re-apply the latest undone change."""
    event = obj.lab.get_model(model).labels.redo()
    click.echo(f"Redone: {len(event.changes)} sample(s).")


@labels.command("next")
@click.argument("model")
@click.option("--count", "-n", default=10, show_default=True, help="How many samples.")
@click.option(
    "--strategy",
    "-s",
    default="auto",
    show_default=True,
    help="A query strategy (default auto: typical samples while labels are scarce, then "
    "uncertain and diverse ones; `activelab plugins` lists margin, typiclust, coreset, ...).",
)
@click.option("--run", "run_id", default=None, help="Whose predictions (default: the latest).")
@click.option(
    "--among", default=None, help="Only pick among these samples, e.g. 0-999,1500 (a pool)."
)
@click.option("--seed", type=int, default=None, help="Repeatable picks (random, ties).")
@json_option
@click.pass_obj
def next_(
    obj: Any,
    model: str,
    count: int,
    strategy: str,
    run_id: str | None,
    among: str | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """The unlabeled samples to label next, as a query strategy ranks them, best first."""
    candidates = parse_indices((among,)) if among else None
    picked = obj.lab.get_model(model).next_to_label(
        count, strategy=strategy, run=run_id, candidates=candidates, seed=seed
    )
    if as_json:
        emit_json(picked)
    else:
        click.echo(" ".join(str(i) for i in picked))
        click.echo(f"{len(picked)} sample(s) picked by {strategy}; label them with "
                   f"`activelab labels set {model} LABEL INDEX...`.", err=True)  # fmt: skip


@labels.command("import")
@click.argument("model")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--replace", is_flag=True, help="Also clear labels that are not in the file.")
@click.pass_obj
def import_(obj: Any, model: str, file: str, replace: bool) -> None:
    """Import a labels CSV as one change: lines of `sample_index,label`, or `path,label` for
    an image folder (paths relative to it), or with a header naming those columns."""
    found = obj.lab.get_model(model)
    raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    text = decode_csv(raw, "standard input" if file == "-" else file)
    files = found.sample_files()  # an image folder's files: lines may name them
    event = found.labels.import_csv(text, replace, files)
    unchanged = (
        "every sample in the file already had that label"
        if found.labels.parse_csv(text, files)
        else "the file holds no labels (lines of sample_index,label or path,label)"
    )
    _report(event, "imported", unchanged)


@labels.command("export")
@click.argument("model")
@click.argument("target", required=False, type=click.Path(allow_dash=True))
@click.option(
    "--layout",
    type=click.Choice(["csv", "imagefolder"]),
    default="csv",
    show_default=True,
    help="csv: one line per label (with the file's path for an image folder); imagefolder: "
    "TARGET/<class>/ folders of the labeled images, as torchvision, Hugging Face and "
    "FiftyOne read them.",
)
@click.option("--link", is_flag=True, help="imagefolder: symlink the files instead of copying.")
@click.pass_obj
def export(obj: Any, model: str, target: str | None, layout: str, link: bool) -> None:
    """Write the labels as CSV to TARGET (default: stdout), or the labeled images into class
    folders under TARGET (`--layout imagefolder`)."""
    found = obj.lab.get_model(model)
    if layout == "imagefolder":
        if target in (None, "-"):
            raise click.UsageError("--layout imagefolder needs a TARGET folder.")
        with click.progressbar(
            length=found.labels.count, label="Exporting", file=sys.stderr
        ) as bar:
            done = found.export_labeled_folders(
                target, link=link, progress=lambda n, _total: bar.update(n - bar.pos)
            )
        what = {"copied": "Copied", "linked": "Linked", "written": "Wrote PNGs of"}[done.how]
        classes = ", ".join(f"{name}: {count}" for name, count in done.per_class.items())
        click.echo(f"{what} {done.count} labeled images into {done.target}/<class>/ ({classes}).")
        return
    if target in (None, "-"):
        click.echo(found.labels_csv(), nl=False)
        return
    if Path(target).is_dir():
        raise click.BadParameter(
            f"{target!r} is a directory: give a file name for the CSV, or add "
            "--layout imagefolder to write the labeled images into class folders there.",
            param_hint="TARGET",
        )
    path = found.export_labels(target)
    click.echo(f"Wrote {found.labels.count} labels to {path}.", err=True)


@labels.command("stats")
@click.argument("model")
@json_option
@click.pass_obj
def stats(obj: Any, model: str, as_json: bool) -> None:
    """Labeled samples per class."""
    found = obj.lab.get_model(model)
    counts = found.labels.stats()
    total = sum(counts.values())
    size = found.dataset_info.size
    if as_json:
        emit_json(
            {
                "per_class": counts,
                "labeled": total,
                "unlabeled": size - total,
                "digest": found.labels.digest(),
            }
        )
        return
    table([{"class": k, "labeled": v} for k, v in counts.items()])
    click.echo(
        f"{total} of {size} samples labeled ({100 * total / size:.1f}%), {size - total} unlabeled."
    )


@labels.command("show")
@click.argument("model")
@click.argument("indices", nargs=-1, metavar="INDEX...")
@json_option
@click.pass_obj
def show(obj: Any, model: str, indices: tuple[str, ...], as_json: bool) -> None:
    """Show the labels of samples INDEX... (all labeled samples when none given)."""
    store = obj.lab.get_model(model).labels
    current = store.as_dict()
    wanted = parse_indices(indices) if indices else sorted(current)
    rows = [
        {"sample": i, "label": store.class_name(current.get(store._check_index(i)))} for i in wanted
    ]
    if as_json:
        emit_json(rows)
    else:
        table(rows, empty="No labels yet.")
