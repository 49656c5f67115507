"""How the CLI prints: tables for people, JSON for scripts, errors on stderr."""

from __future__ import annotations

import json
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[dict[str, Any]], columns: list[str] | None = None, empty: str = "") -> None:
    """An aligned text table (pandas does the layout)."""
    if not rows:
        if empty:
            click.echo(empty)
        return
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns or list(rows[0]))
    click.echo(frame.to_string(index=False, na_rep="-", max_colwidth=48))


def task_rows(config: Any, indent: str = "") -> list[dict[str, Any]]:
    """A model's tasks as table rows (`models show` indents them under its other facts)."""
    return [
        {
            f"{indent}name": f"{indent}{t.name}",
            "class": t.kind,
            "weight": t.weight,
            "enabled": "yes" if t.enabled else "no",
            "latent": t.latent_slice or "all",
            "params": ", ".join(f"{k}={v}" for k, v in t.params.items()),
        }
        for t in config.tasks
    ]


def parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    """["a=1", "b=2"] -> {"a": "1", "b": "2"}; a clear error for anything else."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        result[key.strip()] = value.strip()
    return result
