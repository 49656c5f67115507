"""Pretrained features for photos: a frozen torchvision network turns each image into a
vector once, and the model learns on those vectors (what FiftyOne and Lightly label in).

Nothing is downloaded: the weights come from a local file (`trainer.features_weights`) or
from torch's cache of downloaded weights (`$TORCH_HOME/hub/checkpoints/<architecture>-*.pth`,
where `torchvision.models.<architecture>(weights=...)` leaves them on a machine online). The
features of a data set are computed once and kept under the data directory, keyed by the data,
the architecture, the weights file and the input size. (Imports torch: import it only when
a model uses pretrained features.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from activelab.errors import InvalidConfigError, TrainingError

if TYPE_CHECKING:
    from collections.abc import Callable

# ImageNet's channel statistics: what torchvision's pretrained classifiers expect
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CHUNK = 256


def weights_file(architecture: str, explicit: str = "") -> Path:
    """The weights to load: `explicit`, else the newest `<architecture>-*.pth` in torch's
    hub cache; a clear error that says where to put the file when there is none."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise TrainingError(
                f"trainer.features_weights={explicit!r}: no such file. Give the path of a "
                f"{architecture} state dict saved with torch.save (nothing is downloaded)."
            )
        return path
    import torch.hub

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(folder.glob(f"{architecture}-*.pth"), key=os.path.getmtime)
    if not found:
        raise TrainingError(
            f"No weights for {architecture} on this machine: nothing is downloaded at run "
            f"time. Copy torchvision's file (e.g. {architecture}-<hash>.pth) into {folder}, or "
            "set trainer.features_weights=/path/to/weights.pth."
        )
    return found[-1]


class FrozenFeatures(nn.Module):
    """A torchvision classifier without its last layer, frozen, with its input preparation:
    gray images repeated to three channels, resized, normalised with ImageNet's statistics.
    A module, so the logged MLflow model can hold it and take images."""

    def __init__(self, architecture: str, weights: Path, size: int) -> None:
        import torchvision

        super().__init__()
        try:
            network = torchvision.models.get_model(architecture, weights=None)
        except ValueError:
            known = ", ".join(sorted(torchvision.models.list_models(torchvision.models)))
            raise InvalidConfigError(
                f"trainer.features={architecture!r} is not a torchvision classifier; use one "
                f"of: {known}."
            ) from None
        state = torch.load(weights, map_location="cpu", weights_only=True)
        try:
            network.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise TrainingError(
                f"{weights} does not hold {architecture} weights ({exc}); give a state dict "
                "of that architecture."
            ) from None
        _drop_last_layer(network)
        network.eval().requires_grad_(False)
        self.network = network
        self.size = size
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FrozenFeatures:
        """Always in eval mode: frozen batch norm statistics."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        with torch.no_grad():
            features: torch.Tensor = self.network((x - mean) / std).flatten(1)
        return features


def _drop_last_layer(network: Any) -> None:
    """Replace the classifier's last linear layer with the identity (the features before it
    are what transfers)."""
    for name in ("fc", "classifier", "heads", "head"):
        layer = getattr(network, name, None)
        if isinstance(layer, nn.Linear):
            setattr(network, name, nn.Identity())
            return
        if isinstance(layer, nn.Sequential):
            for i in reversed(range(len(layer))):
                if isinstance(layer[i], nn.Linear):
                    layer[i] = nn.Identity()
                    return
    raise InvalidConfigError(
        f"{type(network).__name__} has no last linear layer to take features before."
    )


def features_of(
    images: np.ndarray,
    architecture: str,
    weights: Path,
    size: int,
    cache_dir: Path,
    progress: Callable[[float, str], None] | None = None,
) -> np.ndarray:
    """(N, D) float32 features of `images` (N, C, H, W in [0, 1]), from the cache when the
    same data, network, weights and size were seen before."""
    stat = weights.stat()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{architecture}|{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
    digest.update(f"{size}|{images.shape}".encode())
    digest.update(np.ascontiguousarray(images).data)
    target = cache_dir / f"{architecture}-{digest.hexdigest()}.npy"
    if target.exists():
        try:
            return np.load(target, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a damaged cache file is computed again
    extractor = FrozenFeatures(architecture, weights, size)
    parts: list[np.ndarray] = []
    for start in range(0, len(images), CHUNK):
        parts.append(extractor(torch.from_numpy(images[start : start + CHUNK])).numpy())
        if progress:
            progress(start / len(images), f"pretrained features {start:,}/{len(images):,}")
    found = np.concatenate(parts).astype(np.float32)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as handle:
            np.save(handle, found, allow_pickle=False)
        os.replace(partial, target)
    except OSError:  # a read-only data directory: the features still serve this run
        pass
    return found
