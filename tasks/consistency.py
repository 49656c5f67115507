"""Consistency under augmentation (FixMatch, Sohn et al. 2020): where the model is confident
about a weakly augmented view of an unlabeled image, the strongly augmented view must get the
same class. It teaches the network that a rotated, noisy or partly hidden 7 is still a 7,
which pixel distances never see. On by default for image data sets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import param

from activelab.dataset import CLASS_LABELS
from activelab.hookspecs import hookimpl
from activelab.task import Batch, Outputs, Task
from activelab.tasks.augment import check_names, pipeline

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch


class Consistency(Task):
    """Confident predictions on a weak view of each unlabeled sample teach its strong view
    (labeled samples teach their strong view their label)."""

    kind = "consistency"
    requires = frozenset({CLASS_LABELS})
    has_validation_loss = False  # held-out samples are not augmented
    # Its latent groups samples by class whatever their pose: the trainer may build the data
    # graph over it once trained (SSVAETrainer graph="auto").
    invariant_latent = True
    metric_thresholds = {"confident_share": (0.7, 0.3, True)}

    # FixMatch's 0.95 waits long for confident samples; with a round's few hundred steps
    # 0.8 teaches sooner (one run on hard digits at 50 labels: 57 % vs 53 %)
    threshold = param.Number(
        0.8, bounds=(0, 1), doc="Least confidence on the weak view for its class to be taught."
    )
    weak = param.List(["shift"], item_type=str, doc="Augmentations of the weak view, in order.")
    strong = param.List(
        ["geometry", "contrast", "noise", "cutout"],
        item_type=str,
        doc="Augmentations of the strong view, in order (see activelab.tasks.augment).",
    )
    samples = param.Integer(
        256, bounds=(1, 65536), doc="At most this many unlabeled samples of a batch get views."
    )

    @classmethod
    def check_value(cls, pname: str, value: Any) -> None:
        super().check_value(pname, value)
        if pname in ("weak", "strong"):
            check_names(list(value), f"the consistency task's {pname!r} list")

    def loss(self, batch: Batch, out: Outputs, module: Any) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if batch.forward is None or batch.classify is None:
            return out.mu.new_zeros(())
        labeled = batch.labels >= 0
        unlabeled = torch.nonzero(~labeled).flatten()[: self.samples]
        rows = torch.cat([unlabeled, torch.nonzero(labeled).flatten()])
        if len(rows) == 0:
            return out.mu.new_zeros(())
        images = batch.x[rows]
        with torch.no_grad():
            weak_logits = batch.classify(
                batch.forward(pipeline(self.weak)(images[: len(unlabeled)]))
            )
        if weak_logits is None:
            return out.mu.new_zeros(())
        confidence, guessed = torch.softmax(weak_logits, dim=1).max(dim=1)
        targets = torch.cat([guessed, batch.labels[labeled]])
        keep = torch.cat([(confidence >= self.threshold).float(), torch.ones(int(labeled.sum()))])
        strong_logits = batch.classify(batch.forward(pipeline(self.strong)(images)))
        if strong_logits is None:
            return out.mu.new_zeros(())
        per_sample = F.cross_entropy(strong_logits, targets, reduction="none")
        return (per_sample * keep.to(per_sample.device)).mean()

    def metrics(self, batch: Batch, out: Outputs, module: Any) -> dict[str, float]:
        """`confident_share`: the share of samples whose weak view passes the threshold (how
        much of the data the task is teaching)."""
        import torch

        if batch.classify is None:
            return {}
        logits = batch.classify(out)
        if logits is None:
            return {}
        confidence = torch.softmax(logits, dim=1).max(dim=1).values
        return {"confident_share": float((confidence >= self.threshold).float().mean())}


@hookimpl
def register_tasks(register: Callable[[type], None]) -> None:
    register(Consistency)
