"""Data sets as plugins: a cheap description (`info`) and the arrays (`load`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from activelab.component import Component

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from activelab.label_csv import SampleFiles

# What a data set can provide; tasks state which of these they need.
IMAGES = "images"
CLASS_LABELS = "class_labels"  # a fixed list of classes a person can label with
TRUE_LABELS = "true_labels"  # the data set carries a ground-truth class per sample


@dataclass(frozen=True)
class DatasetInfo:
    """What activelab needs to know about a data set without loading it."""

    kind: str
    size: int
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # channels, height, width
    has_true_labels: bool

    @property
    def provides(self) -> frozenset[str]:
        found = {IMAGES}
        if self.classes:
            found.add(CLASS_LABELS)
        if self.has_true_labels:
            found.add(TRUE_LABELS)
        return frozenset(found)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DatasetInfo:
        raw: dict[str, Any] = json.loads(text)
        return cls(
            kind=raw["kind"],
            size=int(raw["size"]),
            classes=tuple(raw["classes"]),
            image_shape=tuple(raw["image_shape"]),
            has_true_labels=bool(raw["has_true_labels"]),
        )


# Images at least this many pixels high and wide get a convolutional network and
# augmentation-consistency by default (digits' 8x8 stays on the MLP, which learns it well).
IMAGE_MIN_SIDE = 16


def is_image_data(info: DatasetInfo) -> bool:
    """Whether samples are pictures large enough for convolutions and augmentations."""
    return min(info.image_shape[1:]) >= IMAGE_MIN_SIDE


@dataclass
class DataBundle:
    """A loaded data set: images scaled to [0, 1] and, where known, the true classes."""

    images: np.ndarray  # float32, (N, C, H, W)
    true_labels: np.ndarray | None  # int64, (N,), or None
    info: DatasetInfo
    # the value of a white pixel in the data's integer form (255 for image files): the logged
    # model divides integer input by it
    pixel_max: float = 255.0


class Dataset(Component):
    """A data set plugin. Subclasses set `kind` and implement `info` and `load`."""

    def info(self) -> DatasetInfo:
        """Size, classes and image shape; must be cheap (no full load where avoidable)."""
        raise NotImplementedError

    def load(self, progress: Callable[[float, str], None] | None = None) -> DataBundle:
        """Every sample, in a stable order (sample index i is row i)."""
        raise NotImplementedError

    def sample_files(self) -> SampleFiles | None:
        """The folder the samples are read from and each sample's file in it (sample i: file
        i), for data sets made of files; None for the others (the default)."""
        return None
