"""An image folder decoded once: the pixels of every file at the model's size, kept as one
uint8 array under the data directory, so later runs, the warm worker and the app load a
folder in a fraction of the time decoding takes.

The cache is keyed by the folder's listing (each file's relative path, size and modification
time) and the decoding settings (size, channels): a file added, removed or changed gives
another key, and the folder is decoded again (its older cache is removed). Files are written
to a temporary name and renamed, so a stopped decode leaves no half cache behind.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# torchvision's IMG_EXTENSIONS, kept here so listing a folder does not import torch
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# progress is reported about this often while decoding
PROGRESS_EVERY = 500

Progress = Callable[[float, str], None] | None


@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder in a stable order, with their classes (-1: none) and
    what each file's cache key is made of (its size and modification time)."""

    root: Path
    files: tuple[str, ...]  # paths relative to root
    targets: tuple[int, ...]
    classes: tuple[str, ...]
    has_class_folders: bool
    stamps: tuple[tuple[int, int], ...]  # (size, mtime in ns) of each file

    def key(self, size: int, channels: int) -> str:
        """A digest of every file's path, size and modification time, and the settings."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{size}|{channels}|{len(self.files)}\n".encode())
        for relative, (length, mtime) in zip(self.files, self.stamps, strict=True):
            digest.update(f"{relative}|{length}|{mtime}\n".encode())
        return digest.hexdigest()


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _images_under(folder: str, prefix: str, found: list[tuple[str, int, int]]) -> None:
    """Every image below `folder` (sorted by name at each level, files before nothing else:
    the order of torchvision's sorted os.walk), with its size and modification time, in one
    pass of scandir (the listing of 20,000 files is most of what a cached load costs)."""
    with os.scandir(folder) as scan:
        entries = {entry.name: entry for entry in scan}
    folders = []
    for name in sorted(entries):
        entry = entries[name]
        if entry.is_dir(follow_symlinks=True):
            folders.append(entry)
        elif is_image(name):
            stat = entry.stat()
            found.append((prefix + name, stat.st_size, stat.st_mtime_ns))
    for entry in folders:
        _images_under(entry.path, f"{prefix}{entry.name}/", found)


def list_folder(root: Path) -> FolderListing:
    """Class sub-folders (each one's images, recursively, sorted: torchvision's ImageFolder
    order), or a flat folder of unlabeled images."""
    with os.scandir(root) as scan:
        classes = sorted(
            entry.name for entry in scan if entry.is_dir() and not entry.name.startswith(".")
        )
    found: list[tuple[str, int, int]] = []
    targets: list[int] = []
    if not classes:
        with os.scandir(root) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            if entry.is_file() and is_image(entry.name):
                stat = entry.stat()
                found.append((entry.name, stat.st_size, stat.st_mtime_ns))
        targets = [-1] * len(found)
    for target, name in enumerate(classes):
        before = len(found)
        _images_under(str(root / name), f"{name}/", found)
        targets += [target] * (len(found) - before)
    return FolderListing(
        root,
        tuple(relative for relative, _size, _mtime in found),
        tuple(targets),
        tuple(classes),
        bool(classes),
        tuple((size, mtime) for _relative, size, mtime in found),
    )


def decode(
    listing: FolderListing, size: int, channels: int, progress: Progress = None
) -> np.ndarray:
    """(N, channels, size, size) uint8 pixels of every file (resized; gray or RGB)."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    count = len(listing.files)
    pixels = np.empty((count, channels, size, size), dtype=np.uint8)
    for i, relative in enumerate(listing.files):
        with Image.open(listing.root / relative) as image:
            picture = np.asarray(image.convert(mode).resize((size, size)))
        pixels[i] = picture[None] if channels == 1 else picture.transpose(2, 0, 1)
        if progress and i % PROGRESS_EVERY == 0:
            progress(i / max(count, 1), f"decoding images {i:,}/{count:,} (once; cached after)")
    return pixels


def folder_digest(root: Path) -> str:
    """The start of every cache file name of the folder at `root`."""
    return hashlib.blake2b(str(root.resolve()).encode(), digest_size=8).hexdigest()


def cache_path(listing: FolderListing, size: int, channels: int, cache_dir: Path) -> Path:
    return cache_dir / f"{folder_digest(listing.root)}-{listing.key(size, channels)}.npy"


def as_floats(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1]."""
    images = np.empty(pixels.shape, dtype=np.float32)
    np.multiply(pixels, np.float32(1 / 255), out=images)
    return images


class CacheGuess:
    """The folder's cache file as it was last stored, read and converted to floats in a thread
    while the folder is listed (a listing of 20,000 files costs about as much as the reading);
    the listing then says whether that file is still the folder's (`images_for`)."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        found = list(cache_dir.glob(f"{folder_digest(root)}-*.npy")) if cache_dir.is_dir() else []
        self.path = found[0] if len(found) == 1 else None  # one per folder (see cached_pixels)
        self._images: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        if self.path is not None:
            self._thread = threading.Thread(target=self._read, name="activelab-cache-read")
            self._thread.start()

    def _read(self) -> None:
        assert self.path is not None
        try:
            self._images = as_floats(np.load(self.path, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError):
            self._images = None  # a damaged or vanished file: the folder is decoded again

    def images_for(
        self, listing: FolderListing, size: int, channels: int, cache_dir: Path
    ) -> np.ndarray | None:
        """The float images when the guessed file is the listing's cache, else None."""
        if self._thread is None:
            return None
        self._thread.join()
        expected = (len(listing.files), channels, size, size)
        images, self._images = self._images, None
        if self.path != cache_path(listing, size, channels, cache_dir) or images is None:
            return None
        return images if images.shape == expected else None


def cached_pixels(
    listing: FolderListing, size: int, channels: int, cache_dir: Path, progress: Progress = None
) -> np.ndarray:
    """The folder's pixels from the cache (memory-mapped, read-only), decoding and storing
    them first when the folder or the settings changed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = folder_digest(listing.root)
    target = cache_path(listing, size, channels, cache_dir)
    if target.exists():
        try:
            found = np.load(target, mmap_mode="r", allow_pickle=False)
            if found.shape == (len(listing.files), channels, size, size):
                return found
        except (OSError, ValueError):
            pass  # a damaged cache file is decoded again
    pixels = decode(listing, size, channels, progress)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        with open(partial, "wb") as handle:
            np.save(handle, pixels, allow_pickle=False)
        os.replace(partial, target)
        for older in cache_dir.glob(f"{folder}-*.npy"):  # the folder as it was before
            if older != target:
                older.unlink(missing_ok=True)
    except OSError:  # a read-only or full data directory: the pixels still serve this run
        partial.unlink(missing_ok=True)
    return pixels
