"""Image augmentations on whole batches of tensors, for the consistency task.

Each augmentation takes a (B, C, H, W) batch in [0, 1] and returns a new batch of the same
shape, drawn independently per sample, on the batch's device: one affine grid and a few
tensor operations per batch, so a step stays cheap on a CPU (a per-image PIL pipeline costs
more than the network here). FixMatch's weak view is a shift (and a flip for photos); its
strong view adds rotation, scale, shear, contrast, noise and a cutout (RandAugment's spirit,
applied to every sample with random strengths).

A plugin module adds its own with `register_augmentation(name, function)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from activelab.errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

Augmentation = Callable[["torch.Tensor"], "torch.Tensor"]


def _uniform(batch: int, spread: float, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values drawn uniformly from [-spread, spread]."""
    import torch

    return (torch.rand(batch, device=like.device) * 2 - 1) * spread


def affine(
    x: torch.Tensor,
    degrees: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    shift: float = 0.0,
) -> torch.Tensor:
    """A random rotation (+-degrees), scale (1 +- scale), shear and shift (+- that fraction of
    the image) per sample, in one `affine_grid` / `grid_sample` over the batch."""
    import torch
    import torch.nn.functional as F

    batch = x.shape[0]
    angle = _uniform(batch, math.radians(degrees), x)
    size = 1 + _uniform(batch, scale, x)
    slant = _uniform(batch, shear, x)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(batch, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = cos / size
    theta[:, 0, 1] = (slant * cos - sin) / size
    theta[:, 1, 0] = sin / size
    theta[:, 1, 1] = (cos + slant * sin) / size
    theta[:, 0, 2] = _uniform(batch, 2 * shift, x)  # the grid spans [-1, 1]: 2 per image
    theta[:, 1, 2] = _uniform(batch, 2 * shift, x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def shift(x: torch.Tensor) -> torch.Tensor:
    """Moved by up to 12.5 % of the image each way (FixMatch's weak translation)."""
    return affine(x, shift=0.125)


def flip(x: torch.Tensor) -> torch.Tensor:
    """Mirrored left to right for half the samples (photos; not for digits or text)."""
    import torch

    mirrored = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mirrored[:, None, None, None], x.flip(-1), x)


def geometry(x: torch.Tensor) -> torch.Tensor:
    """Rotation up to 30 degrees, scale +-20 %, shear up to 0.3 and a 12.5 % shift."""
    return affine(x, degrees=30.0, scale=0.2, shear=0.3, shift=0.125)


def contrast(x: torch.Tensor) -> torch.Tensor:
    """Contrast x0.5-1.3 about each image's mean, brightness +-0.2."""
    import torch

    batch = x.shape[0]
    gain = 0.5 + torch.rand(batch, 1, 1, 1, device=x.device) * 0.8
    offset = (torch.rand(batch, 1, 1, 1, device=x.device) - 0.5) * 0.4
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * gain + mean + offset).clamp(0, 1)


def noise(x: torch.Tensor) -> torch.Tensor:
    """Gaussian pixel noise of a random strength up to 0.15."""
    import torch

    strength = torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 0.15
    return (x + torch.randn_like(x) * strength).clamp(0, 1)


def cutout(x: torch.Tensor) -> torch.Tensor:
    """A square of half the image's side, at a random place, filled with grey."""
    import torch

    batch, _channels, height, width = x.shape
    side = max(1, min(height, width) // 2)
    top = torch.randint(0, height, (batch, 1, 1), device=x.device) - side // 2
    left = torch.randint(0, width, (batch, 1, 1), device=x.device) - side // 2
    rows = torch.arange(height, device=x.device)[None, :, None]
    cols = torch.arange(width, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return x.masked_fill(inside[:, None], 0.5)


AUGMENTATIONS: dict[str, Augmentation] = {
    "shift": shift,
    "flip": flip,
    "geometry": geometry,
    "contrast": contrast,
    "noise": noise,
    "cutout": cutout,
}


def register_augmentation(name: str, function: Augmentation) -> None:
    """Make `function` ((B, C, H, W) in [0, 1] -> the same shape) usable by name in the
    consistency task's `weak` and `strong` lists (call it from a plugin module)."""
    AUGMENTATIONS[name] = function


def check_names(names: list[str], what: str) -> None:
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise InvalidConfigError(
            f"Unknown augmentation(s) {', '.join(map(repr, unknown))} in {what}; choose from "
            f"{', '.join(sorted(AUGMENTATIONS))}."
        )


def pipeline(names: list[str]) -> Augmentation:
    """The named augmentations applied in order."""
    check_names(names, "the augmentation list")
    steps = [AUGMENTATIONS[name] for name in names]

    def apply(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return apply
