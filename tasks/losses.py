"""Built-in tasks: reconstruction, KL divergence and classification (labeled samples only)."""

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
    metric_thresholds = {"mse": (0.02, 0.06, False)}

    loss_type = param.Selector(
        default="mse", objects=["mse", "bce"], doc="Mean squared error or binary cross-entropy."
    )

    def loss(self, batch: Batch, out: Outputs, module: Any) -> torch.Tensor:
        import torch.nn.functional as F

        if self.loss_type == "bce":
            return F.binary_cross_entropy(out.x_hat.clamp(1e-6, 1 - 1e-6), batch.x)
        return F.mse_loss(out.x_hat, batch.x)

    def metrics(self, batch: Batch, out: Outputs, module: Any) -> dict[str, float]:
        import torch.nn.functional as F

        return {"mse": float(F.mse_loss(out.x_hat, batch.x))}


class KLDivergence(Task):
    """KL divergence of the latent posterior from a unit Gaussian (per sample)."""

    kind = "kl"

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
    """Cross-entropy of a classifier head on the latent, on labeled samples only."""

    kind = "classification"
    requires = frozenset({CLASS_LABELS})
    predicts_classes = True
    metric_thresholds = {"accuracy": (0.9, 0.6, True), "labeled_accuracy": (0.95, 0.7, True)}

    hidden = param.Integer(32, bounds=(0, 4096), doc="Hidden units of the head (0 = linear).")
    label_smoothing = param.Number(0.0, bounds=(0, 0.5), doc="Cross-entropy label smoothing.")

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
        if not bool(labeled.any()):
            return out.mu.new_zeros(())
        logits = module(self.latent(out.mu)[labeled])  # the head on labeled rows only
        return F.cross_entropy(logits, batch.labels[labeled], label_smoothing=self.label_smoothing)

    def metrics(self, batch: Batch, out: Outputs, module: Any) -> dict[str, float]:
        predicted = self.predict(out, module).argmax(dim=1)
        figures: dict[str, float] = {}
        labeled = batch.labels >= 0
        if bool(labeled.any()):
            figures["labeled_accuracy"] = float(
                (predicted[labeled] == batch.labels[labeled]).float().mean()
            )
        if batch.true_labels is not None:
            figures["accuracy"] = float((predicted == batch.true_labels).float().mean())
        return figures


@hookimpl
def register_tasks(register: Callable[[type], None]) -> None:
    for cls in (Reconstruction, KLDivergence, Classification):
        register(cls)
