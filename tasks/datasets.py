"""Built-in data sets: digits (offline default), MNIST, Fashion-MNIST and a folder of images."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import param

from activelab.dataset import DataBundle, Dataset, DatasetInfo
from activelab.errors import DatasetUnavailableError, InvalidConfigError
from activelab.hookspecs import hookimpl
from activelab.label_csv import SampleFiles
from activelab.settings import data_dir
from activelab.tasks.image_cache import (
    CacheGuess,
    FolderListing,
    as_floats,
    cached_pixels,
    list_folder,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    Progress = Callable[[float, str], None] | None

DIGIT_CLASSES = tuple(str(d) for d in range(10))


class Digits(Dataset):
    """scikit-learn's 8x8 handwritten digits (1,797 samples); works offline."""

    kind = "digits"
    SIZE = 1797

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.kind, self.SIZE, DIGIT_CLASSES, (1, 8, 8), has_true_labels=True)

    def load(self, progress: Progress = None) -> DataBundle:
        table = np.loadtxt(_digits_csv(), delimiter=",", dtype=np.float32)
        images = (table[:, :-1] / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
        return DataBundle(images, table[:, -1].astype(np.int64), self.info(), pixel_max=16.0)


def _digits_csv() -> Path:
    """The CSV scikit-learn ships; read directly because importing sklearn.datasets takes ~3 s."""
    spec = importlib.util.find_spec("sklearn")
    if spec and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
        if path.exists():
            return path
    raise DatasetUnavailableError(
        "The digits data set ships with scikit-learn, which is not installed: "
        "pip install scikit-learn."
    )


class _IdxDataset(Dataset):
    """MNIST-format data read with torchvision's loaders."""

    folder: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...]] = ()
    sizes: ClassVar[dict[str, int]] = {"train": 60000, "test": 10000}

    root = param.String(
        default=None, allow_None=True, doc="Folder for the files (default: <data dir>/datasets)."
    )
    split: param.Selector[str] = param.Selector(
        default="train", objects=["train", "test"], doc="Which split."
    )
    download = param.Boolean(True, doc="Download the files when they are missing.")

    def _root(self) -> Path:
        return Path(self.root).expanduser() if self.root else data_dir() / "datasets"

    def _raw_file(self, what: str) -> Path:
        prefix = "train" if self.split == "train" else "t10k"
        return (
            self._root()
            / self.folder
            / "raw"
            / f"{prefix}-{what}-idx{3 if what == 'images' else 1}-ubyte"
        )

    def _size(self) -> int:
        for candidate in (self._raw_file("labels"), Path(f"{self._raw_file('labels')}.gz")):
            if candidate.exists():
                opener = gzip.open if candidate.suffix == ".gz" else open
                with opener(candidate, "rb") as handle:
                    _magic, count = struct.unpack(">II", handle.read(8))
                return int(count)
        return self.sizes[self.split]

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.kind, self._size(), self.class_names, (1, 28, 28), True)

    def _torchvision_class(self) -> Any:
        raise NotImplementedError

    def load(self, progress: Progress = None) -> DataBundle:
        cls = self._torchvision_class()
        root = self._root()
        if progress:
            progress(0.0, f"reading {self.kind}")
        try:
            data = cls(root=str(root), train=self.split == "train", download=self.download)
        except Exception as exc:  # torchvision raises RuntimeError/URLError when offline
            raise DatasetUnavailableError(
                f"{self.kind} is not in {root / self.folder / 'raw'} and could not be downloaded "
                f"({type(exc).__name__}: {exc}). Copy the four IDX files there, or use the "
                "offline 'digits' data set."
            ) from exc
        images = data.data.numpy().astype(np.float32)[:, None, :, :] / 255.0
        labels = data.targets.numpy().astype(np.int64)
        if progress:
            progress(1.0, f"read {len(labels)} samples")
        return DataBundle(images, labels, self.info())


class Mnist(_IdxDataset):
    """MNIST handwritten digits (28x28) through torchvision; downloaded on first use."""

    kind = "mnist"
    folder = "MNIST"
    class_names = DIGIT_CLASSES

    def _torchvision_class(self) -> Any:
        from torchvision.datasets import MNIST

        return MNIST


class FashionMnist(_IdxDataset):
    """Fashion-MNIST clothing images (28x28) through torchvision; downloaded on first use."""

    kind = "fashion-mnist"
    folder = "FashionMNIST"
    # torchvision.datasets.FashionMNIST.classes, kept here so describing the data set
    # does not import torch.
    class_names = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip

    def _torchvision_class(self) -> Any:
        from torchvision.datasets import FashionMNIST

        return FashionMNIST


class ImageFolder(Dataset):
    """Your own images: one sub-folder per class (torchvision's ImageFolder), or a flat folder
    of unlabeled images with the classes named in `classes`."""

    kind = "image-folder"

    path = param.String(default="", doc="The folder that holds the images.")
    size = param.Integer(28, bounds=(4, 512), doc="Images are resized to size x size.")
    grayscale = param.Boolean(True, doc="Convert images to one gray channel.")
    classes = param.List(
        default=[], item_type=str, doc="Class names for a flat folder of unlabeled images."
    )

    def _folder(self) -> Path:
        if not self.path:
            raise InvalidConfigError(
                "The image-folder data set needs a folder: set dataset.path=/path/to/images."
            )
        folder = Path(self.path).expanduser()
        if not folder.is_dir():
            raise DatasetUnavailableError(f"Image folder {folder} does not exist.")
        return folder

    def listing(self) -> FolderListing:
        folder = self._folder()
        found = list_folder(folder)
        if not found.files:
            raise DatasetUnavailableError(f"Image folder {folder} holds no images.")
        return found

    def info(self, listing: FolderListing | None = None) -> DatasetInfo:
        listing = listing or self.listing()
        classes = listing.classes if listing.has_class_folders else tuple(self.classes)
        channels = 1 if self.grayscale else 3
        return DatasetInfo(
            self.kind,
            len(listing.files),
            classes,
            (channels, self.size, self.size),
            listing.has_class_folders,
        )

    def sample_files(self) -> SampleFiles:
        listing = self.listing()
        return SampleFiles(listing.root, listing.files)

    def load(self, progress: Progress = None) -> DataBundle:
        """The images, decoded once into the data directory's cache (see
        activelab.tasks.image_cache) and read from there while the folder is unchanged."""
        cache_dir = data_dir() / "datasets" / "image-cache"
        guess = CacheGuess(self._folder(), cache_dir)  # read while the folder is listed
        listing = self.listing()
        info = self.info(listing)
        channels = info.image_shape[0]
        images = guess.images_for(listing, self.size, channels, cache_dir)
        if images is None:
            pixels = cached_pixels(listing, self.size, channels, cache_dir, progress)
            images = as_floats(pixels)
        truth = np.array(listing.targets, dtype=np.int64) if listing.has_class_folders else None
        return DataBundle(images, truth, info)


@hookimpl
def register_datasets(register: Callable[[type], None]) -> None:
    for cls in (Digits, Mnist, FashionMnist, ImageFolder):
        register(cls)
