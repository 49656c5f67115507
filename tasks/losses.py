"""Built-in tasks: reconstruction, KL divergence, classification (the person's labels and
the labels propagated from them) and the labeling map (a neighbour embedding of the data)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import param

from activelab.dataset import CLASS_LABELS, DatasetInfo
from activelab.hookspecs import hookimpl
from activelab.task import Batch, Outputs, Task

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch


class Reconstruction(Task):
    """Pixel reconstruction error of the decoder (mean over pixels)."""

    kind = "reconstruction"
    reads_reconstruction = True
    metric_thresholds = {"mse": (0.02, 0.06, False)}

    loss_type: param.Selector[str] = param.Selector(
        default="mse", objects=["mse", "bce"], doc="Mean squared error or binary cross-entropy."
    )

    def loss(self, batch: Batch, out: Outputs, module: Any) -> torch.Tensor:
        import torch.nn.functional as F

        if out.x_hat is None:  # a view without a reconstruction
            return out.mu.new_zeros(())
        if self.loss_type == "bce":
            return F.binary_cross_entropy(out.x_hat.clamp(1e-6, 1 - 1e-6), batch.x)
        return F.mse_loss(out.x_hat, batch.x)

    def metrics(self, batch: Batch, out: Outputs, module: Any) -> dict[str, float]:
        import torch.nn.functional as F

        if out.x_hat is None:
            return {}
        return {"mse": float(F.mse_loss(out.x_hat, batch.x))}


class KLDivergence(Task):
    """KL divergence of the latent posterior from a unit Gaussian (per sample)."""

    kind = "kl"
    # fewer than two latent dimensions in use cannot draw a map (kl itself has no target)
    metric_thresholds = {"active_dims": (3.0, 1.0, True)}

    free_bits = param.Number(
        0.0, bounds=(0, None), doc="Nats per latent dimension that cost nothing (stops collapse)."
    )

    def _per_dim(self, out: Outputs) -> torch.Tensor:
        mu, logvar = self.latent(out.mu), self.latent(out.logvar)
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)

    def loss(self, batch: Batch, out: Outputs, module: Any) -> torch.Tensor:
        per_dim = self._per_dim(out).mean(dim=0)
        if self.free_bits > 0:
            per_dim = per_dim.clamp(min=self.free_bits)
        return per_dim.sum()

    def metrics(self, batch: Batch, out: Outputs, module: Any) -> dict[str, float]:
        per_dim = self._per_dim(out).mean(dim=0)
        return {"kl": float(per_dim.sum()), "active_dims": float((per_dim > 0.01).sum())}


class Classification(Task):
    """Cross-entropy of a classifier head on the latent: on the labeled samples, and on the
    labels the trainer propagated from them over the data graph, weighted by their certainty."""

    kind = "classification"
    requires = frozenset({CLASS_LABELS})
    predicts_classes = True
    has_validation_loss = False  # the held-out samples are unlabeled
    architecture_params = ("hidden", "latent_slice")
    metric_thresholds = {
        "unlabeled_accuracy": (0.9, 0.6, True),
        "labeled_accuracy": (0.95, 0.7, True),
    }

    hidden = param.Integer(64, bounds=(0, 4096), doc="Hidden units of the head (0 = linear).")
    label_smoothing = param.Number(0.0, bounds=(0, 0.5), doc="Cross-entropy label smoothing.")
    propagated_weight: param.Number[float] = param.Number(
        1.0,
        bounds=(0, None),
        doc="Weight of the propagated labels of unlabeled samples (0 = labeled samples only).",
    )
    min_certainty: param.Number[float] = param.Number(
        0.0, bounds=(0, 1), doc="Propagated labels less certain than this are not used."
    )

    def build(self, latent_dim: int, info: DatasetInfo) -> torch.nn.Module:
        from torch import nn

        width = self.latent_width(latent_dim)
        if self.hidden == 0:
            return nn.Linear(width, info.num_classes)
        return nn.Sequential(
            nn.Linear(width, self.hidden), nn.ReLU(), nn.Linear(self.hidden, info.num_classes)
        )

    def predict(self, out: Outputs, module: Any) -> torch.Tensor:
        return module(self.latent(out.mu))

    def loss(self, batch: Batch, out: Outputs, module: Any) -> torch.Tensor:
        import torch.nn.functional as F

        labeled = batch.labels >= 0
        loss = out.mu.new_zeros(())
        if bool(labeled.any()):
            logits = module(self.latent(out.mu)[labeled])  # the head on labeled rows only
            loss = F.cross_entropy(
                logits, batch.labels[labeled], label_smoothing=self.label_smoothing
            )
        certainty = batch.propagated_certainty
        if self.propagated_weight > 0 and batch.propagated is not None and certainty is not None:
            weights = certainty * (~labeled).float()
            weights = weights * (certainty >= self.min_certainty).float()
            if bool((weights > 0).any()):
                per_sample = F.cross_entropy(
                    module(self.latent(out.mu)), batch.propagated, reduction="none"
                )
                loss = loss + self.propagated_weight * (per_sample * weights).sum() / max(
                    1, int((~labeled).sum())
                )
        return loss

    def metrics(self, batch: Batch, out: Outputs, module: Any) -> dict[str, float]:
        """`labeled_accuracy` on the labeled rows (how well the person's labels are fit) and
        `unlabeled_accuracy` on the other rows that have a true class."""
        predicted = self.predict(out, module).argmax(dim=1)
        figures: dict[str, float] = {}
        labeled = batch.labels >= 0
        if bool(labeled.any()):
            figures["labeled_accuracy"] = float(
                (predicted[labeled] == batch.labels[labeled]).float().mean()
            )
        if batch.true_labels is not None and bool((~labeled).any()):
            right = predicted[~labeled] == batch.true_labels[~labeled]
            figures["unlabeled_accuracy"] = float(right.float().mean())
        return figures


def neighbour_embedding_loss(
    anchors: torch.Tensor, neighbours: torch.Tensor, repulsion: float
) -> torch.Tensor:
    """Attract each anchor to its data neighbour, repel it from the batch's other samples
    (a Cauchy kernel as in t-SNE / UMAP; negatives from the batch, NEG-t-SNE style)."""
    import torch

    attract = -torch.log((1.0 / (1.0 + (anchors - neighbours).pow(2).sum(dim=1))).clamp_min(1e-4))
    q = 1.0 / (1.0 + torch.cdist(anchors, neighbours).pow(2))
    others = ~torch.eye(len(anchors), dtype=torch.bool, device=anchors.device)
    repel = -torch.log((1.0 - q[others]).clamp_min(1e-4))
    return attract.mean() + repulsion * repel.mean()


class NeighbourMap(Task):
    """Draws the latent as a 2-D map in which neighbours in the data stay together and the
    classes (the person's labels and the propagated ones) form separate islands."""

    kind = "map"
    has_validation_loss = False  # its pairs are drawn for training batches only

    repulsion = param.Number(
        5.0, bounds=(0, None), doc="How hard unrelated samples push apart (negatives per pair)."
    )
    class_pull = param.Number(
        1.0, bounds=(0, None), doc="How hard samples of one class pull together (0 = unlabeled)."
    )

    def loss(self, batch: Batch, out: Outputs, module: Any) -> torch.Tensor:
        points = out.map if out.map is not None else out.mu[:, :2]
        if batch.pairs is None or len(batch.pairs) < 2:
            return points.new_zeros(())
        loss = neighbour_embedding_loss(
            points[batch.pairs[:, 0]], points[batch.pairs[:, 1]], self.repulsion
        )
        if self.class_pull > 0:
            loss = loss + self.class_pull * self._class_pull(batch, points)
        return loss

    @staticmethod
    def _class_pull(batch: Batch, points: torch.Tensor) -> torch.Tensor:
        """Mean -log q over pairs of rows of one class, each pair weighted by both certainties."""
        import torch

        if batch.propagated is not None and batch.propagated_certainty is not None:
            classes, certainty = batch.propagated, batch.propagated_certainty
        else:
            classes = batch.labels
            certainty = (batch.labels >= 0).float()
        labeled = batch.labels >= 0
        classes = torch.where(labeled, batch.labels, classes)
        certainty = torch.where(labeled, torch.ones_like(certainty), certainty)
        certainty = certainty * (classes >= 0).float()
        same = (classes[:, None] == classes[None, :]).float()
        weights = same * certainty[:, None] * certainty[None, :]
        weights.fill_diagonal_(0.0)
        if float(weights.sum()) <= 0:
            return points.new_zeros(())
        q = 1.0 / (1.0 + torch.cdist(points, points).pow(2))
        return -(torch.log(q.clamp_min(1e-4)) * weights).sum() / weights.sum()


@hookimpl
def register_tasks(register: Callable[[type], None]) -> None:
    for cls in (Reconstruction, KLDivergence, Classification, NeighbourMap):
        register(cls)
