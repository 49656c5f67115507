"""The SSVAE's torch modules (imported only when training or evaluating, since torch is slow
to import). Module-level classes so `mlflow.pytorch` can pickle the trained model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from activelab.task import Outputs

MAP_HIDDEN = 64


class SSVAENetwork(nn.Module):
    """MLP encoder to (mu, logvar), reparameterised latent, MLP decoder with a sigmoid, and a
    small head that draws the latent as the 2-D labeling map (a latent of 2 is its own map)."""

    def __init__(
        self, image_shape: tuple[int, ...], hidden_dims: list[int], latent_dim: int
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        width = int(np.prod(image_shape))
        layers: list[nn.Module] = [nn.Flatten()]
        previous = width
        for size in hidden_dims:
            layers += [nn.Linear(previous, size), nn.ReLU()]
            previous = size
        self.encoder = nn.Sequential(*layers)
        self.to_mu = nn.Linear(previous, latent_dim)
        self.to_logvar = nn.Linear(previous, latent_dim)
        layers = []
        previous = latent_dim
        for size in reversed(hidden_dims):
            layers += [nn.Linear(previous, size), nn.ReLU()]
            previous = size
        layers += [nn.Linear(previous, width), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)
        self.to_map = (
            nn.Sequential(nn.Linear(latent_dim, MAP_HIDDEN), nn.ReLU(), nn.Linear(MAP_HIDDEN, 2))
            if latent_dim > 2
            else None
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        return self.to_mu(hidden), self.to_logvar(hidden).clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.image_shape)

    def map_of(self, mu: torch.Tensor) -> torch.Tensor:
        """Labeling-map coordinates of latent means."""
        return mu if self.to_map is None else self.to_map(mu)

    def forward(self, x: torch.Tensor) -> Outputs:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return Outputs(x_hat=self.decode(z), mu=mu, logvar=logvar, z=z, map=self.map_of(mu))


class SSVAEModule(nn.Module):
    """The trained model as one module: network plus the task heads.

    `forward(images)` returns (B, D + K): the latent mean, then the class probabilities of the
    predicting task (K = 0 without one), so the logged MLflow model serves the labeling map.
    """

    def __init__(self, network: SSVAENetwork, heads: nn.ModuleDict, predictor: str | None) -> None:
        super().__init__()
        self.network = network
        self.heads = heads
        self.predictor = predictor
        self.predictor_slice: tuple[int | None, int | None] = (None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, _logvar = self.network.encode(x)
        if self.predictor is None:
            return mu
        start, end = self.predictor_slice
        logits = self.heads[self.predictor](mu[:, start:end])
        return torch.cat([mu, torch.softmax(logits, dim=1)], dim=1)
