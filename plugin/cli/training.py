"""`activelab train` and `activelab runs ...`: launch, follow, stop and continue training."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from activelab import keys
from activelab.cli.output import emit_json, parse_pairs, table
from activelab.humanize import duration, number, relative_time

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.command("train")
@click.argument("model")
@click.option("--epochs", "-e", type=int, default=None, help="Epochs (default: the config's).")
@click.option(
    "--resume-from",
    "resume_from",
    metavar="RUN[:CHECKPOINT]",
    default=None,
    help="Continue from a run's latest checkpoint, or a named one (epoch-0005.pt).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a setting for this run only, e.g. lr=1e-4.",
)
@click.option("--name", "run_name", default=None, help="Run name (default: MODEL #N · E epochs).")
@click.option("--detach", is_flag=True, help="Start and return; follow it with `runs show`.")
@click.option("--no-system-metrics", is_flag=True, help="Skip MLflow's CPU/memory sampling.")
@click.option(
    "--backend",
    default="local",
    show_default=True,
    help="Where the worker runs: local, ray, or a plugin's backend (`activelab plugins`).",
)
@click.option(
    "--address",
    default=None,
    help="The backend's address (ray: http://HEAD:8265, or $RAY_ADDRESS).",
)
@click.option("--cpus", type=float, default=None, help="CPUs to ask the backend for (ray: 1).")
@click.option("--gpus", type=float, default=None, help="GPUs to ask the backend for (ray: 0).")
@click.option(
    "--backend-set",
    "backend_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another backend option, e.g. python=/opt/venv/bin/python for ray.",
)
@json_option
@click.pass_obj
def train(
    obj: Any,
    model: str,
    epochs: int | None,
    resume_from: str | None,
    settings: tuple[str, ...],
    run_name: str | None,
    detach: bool,
    no_system_metrics: bool,
    backend: str,
    address: str | None,
    cpus: float | None,
    gpus: float | None,
    backend_settings: tuple[str, ...],
    as_json: bool,
) -> None:
    """Train MODEL in a background process (or on a cluster with --backend), with a progress
    bar (Ctrl-C stops it cleanly)."""
    found = obj.lab.get_model(model)
    handle = found.launch(
        epochs=epochs, resume_from=resume_from, config=parse_pairs(settings, "--set") or None,
        run_name=run_name, system_metrics=not no_system_metrics, backend=backend,
        address=address, cpus=cpus, gpus=gpus,
        backend_options=parse_pairs(backend_settings, "--backend-set") or None,
    )  # fmt: skip
    if not as_json:
        click.echo(f"Run {handle.run_id} started for {found.name!r}.", err=True)
    if detach:
        if as_json:
            emit_json({"run_id": handle.run_id, "status": handle.status})
        return
    try:
        status = handle.wait(progress=not as_json, follow_ups=True)
    except KeyboardInterrupt:
        click.echo("\nStopping at the next step (Ctrl-C again leaves it running)...", err=True)
        try:
            status = handle.stop(wait=True)
        except KeyboardInterrupt:
            click.echo(f"Left running: activelab runs stop {handle.run_id}", err=True)
            sys.exit(130)
    summary = handle.summary
    if as_json:
        emit_json(summary.to_dict())
    else:
        losses = ", ".join(f"{k} {number(v)}" for k, v in summary.final_losses.items())
        click.echo(
            f"{status}: {summary.name} — {summary.epochs} epoch(s); {losses or 'no loss yet'}"
        )
        if summary.error:
            click.echo(f"error: {summary.error}", err=True)
    if status == "FAILED":
        sys.exit(1)


@click.group()
def runs() -> None:
    """List, inspect and stop training runs; export checkpoints."""


@runs.command("list")
@click.argument("model")
@click.option("--limit", default=20, show_default=True)
@json_option
@click.pass_obj
def list_(obj: Any, model: str, limit: int, as_json: bool) -> None:
    """A model's runs, newest first, with status, duration, epochs and final losses."""
    summaries = obj.lab.get_model(model).runs(limit=limit)
    if as_json:
        emit_json([s.to_dict() for s in summaries])
        return
    table(
        [
            {
                "run": s.run_id[:12],
                "name": s.name,
                "status": s.status.lower(),
                "started": relative_time(s.started) if s.started else "-",
                "duration": duration(s.duration_s),
                "epochs": s.epochs,
                "lineage": s.lineage_epochs,
                "labels": s.labeled_count if s.labeled_count is not None else "-",
                "loss": number(s.final_losses.get("total")),
            }
            for s in summaries
        ],
        empty="No runs yet: activelab train MODEL --epochs 5",
    )


@runs.command("sync")
@click.pass_obj
def sync(obj: Any) -> None:
    """Send what runs left unsent because the tracking server was down when they ended
    (metrics, checkpoints, final status); training processes also do it when they start."""
    from activelab.outbox import deliver_pending

    lab = obj.lab
    counts = deliver_pending(lab.settings.home, lab.tracking)
    click.echo(f"Delivered {counts['items']} item(s) of {counts['runs']} run(s).")
    if counts["pending"]:
        click.secho(
            f"{counts['pending']} run(s) still have unsent items (server unreachable?); "
            "run `activelab runs sync` again later.",
            fg="yellow",
            err=True,
        )
        sys.exit(1)


@runs.command("show")
@click.argument("run_id")
@json_option
@click.pass_obj
def show(obj: Any, run_id: str, as_json: bool) -> None:
    """One run: status, progress, losses, checkpoints, error."""
    from activelab.runs import RunSummary, get_run, list_checkpoints, reap_dead_runs

    tracking = obj.lab.tracking
    run = get_run(tracking, run_id)
    if reap_dead_runs(tracking, [run]):
        run = get_run(tracking, run_id)
    summary = RunSummary.from_run(run)
    checkpoints = list_checkpoints(tracking, run_id)
    if as_json:
        emit_json({**summary.to_dict(), "checkpoints": checkpoints, "metrics": summary.metrics})
        return
    click.echo(f"{summary.name}  ({summary.run_id})  {summary.status}")
    click.echo(
        f"  epochs {summary.epochs} (lineage {summary.lineage_epochs}), "
        f"duration {duration(summary.duration_s)}, labels {summary.labeled_count}"
    )
    if summary.parent_run:
        click.echo(f"  continues {summary.parent_run}")
    if summary.progress and summary.status == "RUNNING":
        p = summary.progress
        click.echo(
            f"  progress: step {p.get('run_steps')}/{p.get('total_steps')}, "
            f"epoch {p.get('epoch')}, {p.get('samples_per_s')} samples/s, "
            f"ETA {duration(p.get('eta_s'))}"
        )
    for key, value in sorted(summary.metrics.items()):
        if key.startswith(("epoch/loss/", "val/", "eval/")):
            click.echo(f"  {key:40s} {number(value)}")
    click.echo("  checkpoints: " + (", ".join(c.split("/")[-1] for c in checkpoints) or "none"))
    if summary.error:
        click.echo(f"  error: {summary.error}")


@runs.command("stop")
@click.argument("run_id")
@click.option("--no-wait", is_flag=True, help="Return once the stop is requested.")
@click.option(
    "--timeout", type=float, default=300, show_default=True, help="Seconds to wait for the end."
)
@click.pass_obj
def stop(obj: Any, run_id: str, no_wait: bool, timeout: float) -> None:
    """Stop a run at its next step (it saves a checkpoint and ends KILLED), wherever it runs.
    A run whose trainer is dead is marked FAILED at once, naming its last checkpoint."""
    from activelab.runs import ACTIVE, get_run, request_stop, wait_for_end

    tracking = obj.lab.tracking
    status = get_run(tracking, run_id).info.status
    if status not in ACTIVE:
        click.echo(f"Run {run_id} already ended ({status}); nothing to stop.")
        return
    request_stop(tracking, run_id)
    click.echo(f"Stop requested for {run_id}.")
    if no_wait:
        return
    status = wait_for_end(tracking, run_id, timeout, say=lambda m: click.echo(m, err=True))
    error = get_run(tracking, run_id).data.tags.get(keys.ERROR) if status == "FAILED" else ""
    click.echo(f"Run ended: {status}." + (f" {error}" if error else ""))


@runs.command("checkpoints")
@click.argument("model")
@click.argument("run_id")
@click.pass_obj
def checkpoints(obj: Any, model: str, run_id: str) -> None:
    """List a run's checkpoints."""
    for path in obj.lab.get_model(model).checkpoints(run_id):
        click.echo(path)


@runs.command("export-checkpoint")
@click.argument("model")
@click.argument("path", type=click.Path())
@click.option(
    "--run",
    "run_ref",
    metavar="RUN[:CHECKPOINT]",
    default=None,
    help="Default: the latest checkpoint of the latest run.",
)
@click.pass_obj
def export_checkpoint(obj: Any, model: str, path: str, run_ref: str | None) -> None:
    """Copy a checkpoint of MODEL to PATH (a file, or a folder to put it in)."""
    target = obj.lab.get_model(model).export_checkpoint(path, run=run_ref)
    click.echo(f"Wrote {target}.")


RUN_REF_HELP = "RUN or RUN:CHECKPOINT (default: the latest checkpoint of the latest run)."


@runs.command("evaluate")
@click.argument("model")
@click.option("--run", "run_ref", metavar="RUN[:CHECKPOINT]", default=None, help=RUN_REF_HELP)
@json_option
@click.pass_obj
def evaluate(obj: Any, model: str, run_ref: str | None, as_json: bool) -> None:
    """Evaluate a checkpoint of MODEL: each task's figures, rated by its thresholds, logged
    to MLflow as an eval run nested under the run."""
    result = obj.lab.get_model(model).evaluate(run_ref)
    rows = [
        {"task": r.task, "metric": r.metric, "value": r.value, "rating": r.rating or "-"}
        for r in result.rows
    ]
    if as_json:
        emit_json({"eval_run_id": result.eval_run_id, "run_id": result.run_id,
                   "checkpoint": result.checkpoint, "figures": rows})  # fmt: skip
        return
    table(rows, empty="The checkpoint gave no figures.")
    click.echo(f"Logged as eval run {result.eval_run_id} under run {result.run_id}.", err=True)


@runs.command("analyze")
@click.argument("model")
@click.argument("analyzer")
@click.option("--run", "run_ref", metavar="RUN[:CHECKPOINT]", default=None, help=RUN_REF_HELP)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write the table (.csv) and picture (.png) into this folder.",
)
@json_option
@click.pass_obj
def analyze(
    obj: Any, model: str, analyzer: str, run_ref: str | None, out: str | None, as_json: bool
) -> None:
    """Run ANALYZER (see `activelab plugins`) on a checkpoint of MODEL; its table and picture
    are logged to the run under analyzers/."""
    from pathlib import Path

    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int, what: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="step", desc=analyzer, leave=False)
        bar.set_postfix_str(what)
        bar.update(done - bar.n)

    try:
        result = obj.lab.get_model(model).analyze(analyzer, run_ref, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    written = []
    if out:
        folder = Path(out).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        if result.table is not None:
            result.table.to_csv(folder / f"{analyzer}.csv")
            written.append(folder / f"{analyzer}.csv")
        png = result.png()
        if png is not None:
            (folder / f"{analyzer}.png").write_bytes(png)
            written.append(folder / f"{analyzer}.png")
    if as_json:
        table_json = None
        if result.table is not None:
            table_json = json.loads(result.table.reset_index().to_json(orient="records"))
        emit_json({"title": result.title, "note": result.note, "table": table_json,
                   "written": [str(p) for p in written]})  # fmt: skip
        return
    click.echo(result.title)
    if result.table is not None:
        click.echo(result.table.to_string(na_rep="-"))
    click.echo(result.note)
    for path in written:
        click.echo(f"Wrote {path}.", err=True)
