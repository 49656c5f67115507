"""The description of a training run that the MLflow UI shows (`mlflow.note.content`): what
was trained, on which labels, from where, and how it ended, in a few lines of Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from activelab.keys import NOTE_TAG  # noqa: F401 (re-export)

if TYPE_CHECKING:
    from activelab.config import ModelConfig


# what a metric's step means, which differs by family
STEPS_NOTE = (
    "Steps: `loss/*` are per optimizer step; `epoch/*`, `val/*` and `eval/*` per epoch (the step "
    "is the epoch number along the run's lineage); `val/*` is held-out unlabeled samples, "
    "`eval/*` all samples (a fixed subset on large data sets)."
)


@dataclass
class RunNote:
    model_name: str
    epochs: int
    config: ModelConfig
    parent_run: str | None = None
    parent_checkpoint: str | None = None
    labeled: int | None = None
    labels_digest: str | None = None
    status: str | None = None
    epochs_done: int = 0
    final_loss: float | None = None
    error: str | None = None

    def markdown(self) -> str:
        c = self.config
        tasks = (
            ", ".join(f"{_md(t.name)} ({t.weight:g})" for t in c.tasks if t.enabled)
            or "none enabled"
        )
        lines = [
            f"activelab training of model **{_md(self.model_name)}**: {self.epochs} epoch(s) "
            f"of trainer `{c.trainer}` on data set `{c.dataset}`, preset `{c.preset}`.",
            f"Tasks (weight): {tasks}.",
        ]
        if self.parent_run:
            checkpoint = (self.parent_checkpoint or "").rsplit("/", 1)[-1]
            lines.append(f"Continues run `{self.parent_run}` from `{checkpoint}`.")
        if self.labeled is not None:
            lines.append(
                f"Trained on {self.labeled} label(s), digest `{self.labels_digest}` "
                "(the dataset input and `labels/labels.csv`)."
            )
        if self.status:
            ended = f"Ended **{self.status}** after {self.epochs_done} epoch(s)"
            if self.final_loss is not None:
                ended += f"; loss/total {self.final_loss:.4g}"
            lines.append(ended + ".")
        lines.append(STEPS_NOTE)
        if self.error:  # a failure comes first: it is what a person looks for
            lines.insert(0, f"Failed: {_md(self.error)[:2000]}")
        return "\n\n".join(lines)


def _md(text: str) -> str:
    """User text inside Markdown: no markup of its own (the MLflow UI renders it)."""
    out = str(text)
    for char in "\\`*_{}[]<>()#+!|":
        out = out.replace(char, "\\" + char)
    return out
