"""A Task is one term of the training loss, with its own evaluation metrics.

The trainer only sums what enabled tasks return (through `TrainingSession.total_loss`, which
refuses a non-finite total) and logs every term (the detectron2 shape). A task may own a small
module (e.g. a classifier head) whose weights train and checkpoint with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import param

from activelab.component import Component
from activelab.errors import InvalidConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from activelab.dataset import DatasetInfo


@dataclass
class Batch:
    """One mini-batch as tasks see it.

    The SSVAE trainer builds each batch from anchors, one data-graph neighbour of each anchor
    (`pairs` holds their rows) and the labeled samples, so every step sees the labels.
    """

    x: torch.Tensor  # images, (B, C, H, W) in [0, 1]
    labels: torch.Tensor  # user labels, (B,), -1 where unlabeled
    true_labels: torch.Tensor | None  # ground truth where the data set has it
    index: torch.Tensor  # sample indices, (B,)
    # (P, 2) rows of the batch that are neighbours in the data (anchor, neighbour), or None
    pairs: torch.Tensor | None = None
    # labels spread from the person's over the data graph, (B,), and their certainty in [0, 1]
    propagated: torch.Tensor | None = None
    propagated_certainty: torch.Tensor | None = None
    # what the network reads when it is not `x` (pretrained features of the images), (B, D)
    inputs: torch.Tensor | None = None
    # the network on other images (e.g. augmented views of `x`), in the step's mode; None
    # where the network does not read images (pretrained features)
    forward: Callable[[torch.Tensor], Outputs] | None = None
    # class logits of outputs, from the task that predicts classes (None: no such task)
    classify: Callable[[Outputs], torch.Tensor | None] | None = None


@dataclass
class Outputs:
    """What the network produced for a batch (the SSVAE trainer's contract)."""

    # reconstruction, same shape as the input (None for views, and in training steps when no
    # task has `reads_reconstruction`)
    x_hat: torch.Tensor | None
    mu: torch.Tensor  # latent mean, (B, D)
    logvar: torch.Tensor  # latent log-variance, (B, D)
    z: torch.Tensor  # sampled latent, (B, D)
    map: torch.Tensor | None = None  # 2-D labeling-map coordinates, (B, 2)


def parse_latent_slice(text: str | None, latent_dim: int | None = None) -> slice:
    """`"start:end"` -> slice; checks the bounds against `latent_dim` when given."""
    if text is None or text.strip() in ("", ":"):
        return slice(None)
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        end = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise InvalidConfigError(
            f"Latent slice {text!r} is not of the form 'start:end' (for example '0:2')."
        ) from None
    stop = end if end is not None else latent_dim
    if start < 0 or (stop is not None and stop <= start):
        raise InvalidConfigError(f"Latent slice {text!r} is empty; 'start:end' needs end > start.")
    if latent_dim is not None and stop is not None and stop > latent_dim:
        raise InvalidConfigError(
            f"Latent slice {text!r} reaches past the {latent_dim}-D latent; "
            f"use a slice within 0:{latent_dim} or raise the trainer's latent_dim."
        )
    return slice(start, end)


class Task(Component):
    """A loss term. Subclasses set `kind` and implement `loss` (or `terms`)."""

    # What the task needs from the data set (see activelab.dataset: IMAGES, CLASS_LABELS, ...).
    requires: ClassVar[frozenset[str]] = frozenset()
    # Metric thresholds for the Evaluate page: {metric: (good, poor, higher_is_better)}.
    metric_thresholds: ClassVar[dict[str, tuple[float, float, bool]]] = {}
    # True for a task whose `predict` gives class logits (used for predictions and strategies).
    predicts_classes: ClassVar[bool] = False
    # Whether `val/loss/<name>` means something: held-out samples carry no person's label and
    # no neighbour pairs, so a loss made of those is 0 there by construction (not logged).
    has_validation_loss: ClassVar[bool] = True
    # True for a task that reads the decoder's reconstruction (`Outputs.x_hat`): without one,
    # a trainer may skip decoding in its training steps.
    reads_reconstruction: ClassVar[bool] = False
    # Parameters that change the shape of the task's module (see Trainer.architecture_params).
    architecture_params: ClassVar[tuple[str, ...]] = ()
    common_params = ("weight", "enabled", "latent_slice")

    weight = param.Number(1.0, bounds=(0, None), doc="Multiplies every loss term of the task.")
    enabled = param.Boolean(True, doc="A disabled task adds nothing to the loss.")
    latent_slice = param.String(
        default=None, allow_None=True, doc="Latent dimensions the task sees, as 'start:end'."
    )

    # --- what subclasses implement -----------------------------------------------------------

    def build(self, latent_dim: int, info: DatasetInfo) -> torch.nn.Module | None:
        """A module the task owns (trained and checkpointed with the model), or None."""
        return None

    def loss(self, batch: Batch, out: Outputs, module: Any) -> torch.Tensor:
        """The unweighted loss for a single-term task."""
        raise NotImplementedError(f"Task {self.kind!r} implements neither loss() nor terms().")

    def terms(self, batch: Batch, out: Outputs, module: Any) -> dict[str, torch.Tensor]:
        """Named, already-weighted loss terms; logged as `loss/<name>`."""
        return {self.name: self.weight * self.loss(batch, out, module)}

    def metrics(self, batch: Batch, out: Outputs, module: Any) -> dict[str, float]:
        """Evaluation figures for a (validation) batch; logged as `eval/<task>/<metric>`."""
        return {}

    def predict(self, out: Outputs, module: Any) -> torch.Tensor | None:
        """Class logits (B, K) for a task with `predicts_classes`, else None."""
        return None

    # --- helpers -----------------------------------------------------------------------------

    def latent(self, tensor: torch.Tensor) -> torch.Tensor:
        """The columns of a (B, D) latent tensor this task works on."""
        return tensor[:, parse_latent_slice(self.latent_slice)]

    def latent_width(self, latent_dim: int) -> int:
        return len(range(*parse_latent_slice(self.latent_slice, latent_dim).indices(latent_dim)))

    def check_data(self, info: DatasetInfo) -> None:
        """Raise if the data set cannot provide what this task needs."""
        missing = sorted(self.requires - info.provides)
        if missing:
            needs = ", ".join(m.replace("_", " ") for m in missing)
            raise InvalidConfigError(
                f"Task {self.name!r} ({self.kind}) needs {needs}, which data set "
                f"{info.kind!r} does not provide; choose a data set with classes or remove "
                "the task."
            )
