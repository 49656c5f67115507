"""The SSVAE's torch modules (imported only when training or evaluating, since torch is slow
to import). Module-level classes so `mlflow.pytorch` can pickle the trained model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from activelab.task import Outputs

MAP_HIDDEN = 64


def _conv_block(inputs: int, outputs: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.LeakyReLU(0.1),
    ]


class ConvEncoder(nn.Sequential):
    """Five 3x3 convolutions (two of them halve the image), then the mean over the image:
    features that see strokes and shapes wherever they are, for images of any size. Measured
    on 28x28 digits with real variation: more accurate per step than wider, shallower stacks,
    and ~3,000 samples/s of training on one CPU thread at width 16."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__(
            *_conv_block(channels, width, 1),
            *_conv_block(width, width, 2),
            *_conv_block(width, 2 * width, 1),
            *_conv_block(2 * width, 2 * width, 2),
            *_conv_block(2 * width, 4 * width, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.features = 4 * width


class ConvDecoder(nn.Module):
    """Latent -> a 4x smaller grid of features -> two upsampling convolutions -> the image."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, ...], width: int) -> None:
        super().__init__()
        channels, height, breadth = image_shape
        self.image_shape = tuple(image_shape)
        self.grid = (-(-height // 4), -(-breadth // 4))
        self.width = 2 * width
        self.expand = nn.Sequential(
            nn.Linear(latent_dim, self.width * self.grid[0] * self.grid[1]), nn.LeakyReLU(0.1)
        )
        # the last step upsamples straight to the image: convolutions at full size cost the
        # most, and the reconstruction is an aid to the latent, not the product
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2.0),
            *_conv_block(self.width, width, 1),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = self.expand(z).view(-1, self.width, *self.grid)
        image = self.body(grid)
        _channels, height, breadth = self.image_shape
        return image[:, :, :height, :breadth]


class SSVAENetwork(nn.Module):
    """Encoder to (mu, logvar), reparameterised latent, decoder with a sigmoid, and a small
    head that draws the latent as the 2-D labeling map (a latent of 2 is its own map).

    `encoder="mlp"` reads flattened pixels (small or non-image inputs); `"conv"` is a
    convolutional encoder and decoder of `conv_width` channels, for images."""

    def __init__(
        self,
        image_shape: tuple[int, ...],
        hidden_dims: list[int],
        latent_dim: int,
        encoder: str = "mlp",
        conv_width: int = 16,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        """`input_shape`: what the encoder reads when it is not the image (pretrained
        features); the decoder always draws the image."""
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        self.kind = encoder
        # False: the map head draws the latent without its loss reaching the encoder
        self.map_shapes_latent = True
        if encoder == "conv":
            conv = ConvEncoder(self.image_shape[0], conv_width)
            self.encoder: nn.Module = conv
            previous = conv.features
            self.decoder: nn.Module = ConvDecoder(latent_dim, self.image_shape, conv_width)
        else:
            self.encoder, previous = _mlp_encoder(input_shape or self.image_shape, hidden_dims)
            self.decoder = _mlp_decoder(self.image_shape, hidden_dims, latent_dim)
        self.to_mu = nn.Linear(previous, latent_dim)
        self.to_logvar = nn.Linear(previous, latent_dim)
        self.to_map = (
            nn.Sequential(nn.Linear(latent_dim, MAP_HIDDEN), nn.ReLU(), nn.Linear(MAP_HIDDEN, 2))
            if latent_dim > 2
            else None
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "conv":
            x = x.contiguous(memory_format=torch.channels_last)  # ~1.4x faster on CPUs
        hidden = self.encoder(x)
        return self.to_mu(hidden), self.to_logvar(hidden).clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(-1, *self.image_shape)

    def map_of(self, mu: torch.Tensor) -> torch.Tensor:
        """Labeling-map coordinates of latent means."""
        return mu if self.to_map is None else self.to_map(mu)

    def forward(self, x: torch.Tensor, decode: bool = True) -> Outputs:
        """The outputs of a batch; `decode=False` leaves the reconstruction out (None), for
        views of a batch that only need the latent (half the cost of a conv step)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        x_hat = self.decode(z) if decode else None
        drawn = mu if self.map_shapes_latent else mu.detach()
        return Outputs(x_hat=x_hat, mu=mu, logvar=logvar, z=z, map=self.map_of(drawn))


def _mlp_encoder(image_shape: tuple[int, ...], hidden_dims: list[int]) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = [nn.Flatten()]
    previous = int(np.prod(image_shape))
    for size in hidden_dims:
        layers += [nn.Linear(previous, size), nn.ReLU()]
        previous = size
    return nn.Sequential(*layers), previous


def _mlp_decoder(
    image_shape: tuple[int, ...], hidden_dims: list[int], latent_dim: int
) -> nn.Module:
    layers: list[nn.Module] = []
    previous = latent_dim
    for size in reversed(hidden_dims):
        layers += [nn.Linear(previous, size), nn.ReLU()]
        previous = size
    layers += [nn.Linear(previous, int(np.prod(image_shape))), nn.Sigmoid()]
    return nn.Sequential(*layers)


class SSVAEModule(nn.Module):
    """The trained model as one module: network plus the task heads.

    `forward(images)` returns (B, M + D + K): the labeling map (M = 2), the latent mean (D),
    then the class probabilities of the predicting task (K = 0 without one): what the
    logged MLflow model names `map_x, map_y`, `latent_<i>` and `p_<class>` (`output_layout`).
    """

    def __init__(self, network: SSVAENetwork, heads: nn.ModuleDict, predictor: str | None) -> None:
        super().__init__()
        self.network = network
        self.heads = heads
        self.predictor = predictor
        self.predictor_slice: tuple[int | None, int | None] = (None, None)
        # the frozen network whose features the model learned on (set for the logged model,
        # so it takes images; never in checkpoints)
        self.image_features: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_features is not None:
            x = self.image_features(x)
        mu, _logvar = self.network.encode(x)
        parts = [self.network.map_of(mu), mu]
        if self.predictor is not None:
            start, end = self.predictor_slice
            logits = self.heads[self.predictor](mu[:, start:end])
            parts.append(torch.softmax(logits, dim=1))
        return torch.cat(parts, dim=1)

    def output_layout(self) -> dict[str, int]:
        """How many of `forward`'s columns are the map and the latent (the rest: classes)."""
        latent = self.network.latent_dim
        return {"map": latent if self.network.to_map is None else 2, "latent": latent}
