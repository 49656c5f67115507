"""Digits with real variation, written as an image folder: scikit-learn's 8x8 digits redrawn
as 28x28 PNGs with random rotation, scale, shear, shift, stroke width, blur, contrast and
noise, several per source digit, in class sub-folders (what a person's own folder looks like).

Each file is named after its source digit (`s<source>-v<variant>.png`), so a test split can
keep every drawing of one source digit on the same side. Used by `bench_learning.py
--data hard-digits` and by the tests (small folders).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

SIZE = 28
SOURCE_NAME = re.compile(r"s(\d+)-v\d+\.png$")


def source_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 8, 8) floats in [0, 1] and their classes."""
    from activelab.tasks.datasets import Digits

    bundle = Digits().load()
    return bundle.images[:, 0], bundle.true_labels


def distort(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 drawing in [0, 1] of an 8x8 digit, with random geometry and photometry."""
    from scipy import ndimage

    big = ndimage.zoom(digit, 2.5, order=3).clip(0, 1)  # 20x20, smooth strokes
    canvas = np.zeros((SIZE, SIZE), np.float32)
    offset = (SIZE - big.shape[0]) // 2
    canvas[offset : offset + big.shape[0], offset : offset + big.shape[1]] = big
    # stroke width: thicker or thinner
    stroke = rng.integers(-1, 3)
    if stroke > 0:
        canvas = ndimage.grey_dilation(canvas, size=(stroke + 1, stroke + 1))
    elif stroke < 0:
        canvas = ndimage.grey_erosion(canvas, size=(2, 2)) * 0.5 + canvas * 0.5
    # geometry: rotation, anisotropic scale, shear, shift (about the centre)
    angle = np.deg2rad(rng.uniform(-25, 25))
    scale = rng.uniform(0.75, 1.15) * np.array([rng.uniform(0.85, 1.15), 1.0])
    shear = rng.uniform(-0.25, 0.25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    inverse = np.linalg.inv(forward)
    centre = np.array([SIZE / 2 - 0.5, SIZE / 2 - 0.5])
    shift = rng.uniform(-2, 2, size=2)
    canvas = ndimage.affine_transform(
        canvas, inverse, offset=centre - inverse @ (centre + shift), order=1
    )
    # photometry: blur, contrast, background, noise
    canvas = ndimage.gaussian_filter(canvas, rng.uniform(0.0, 1.0))
    low = rng.uniform(0.0, 0.15)
    high = rng.uniform(low + 0.5, 1.0)
    canvas = low + (high - low) * canvas.clip(0, 1)
    canvas = canvas + rng.normal(0, rng.uniform(0.0, 0.08), canvas.shape)
    return canvas.clip(0, 1).astype(np.float32)


def write_folder(
    folder: Path, variants: int = 3, seed: int = 0, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Write the drawings as `folder/<class>/s<source>-v<variant>.png`; returns each file's
    source digit and class in the order `image-folder` reads them (sorted by class folder,
    then file name)."""
    from PIL import Image

    digits, classes = source_digits()
    count = len(digits) if limit is None else min(limit, len(digits))
    rng = np.random.default_rng(seed)
    for source in range(count):
        target = folder / str(int(classes[source]))
        target.mkdir(parents=True, exist_ok=True)
        for variant in range(variants):
            pixels = (distort(digits[source], rng) * 255).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(target / f"s{source:04d}-v{variant}.png")
    return folder_sources(folder)


def folder_sources(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Source digit and class of every file, in `image-folder`'s order."""
    from torchvision.datasets import ImageFolder

    samples = ImageFolder(str(folder)).samples
    sources = [int(SOURCE_NAME.search(path).group(1)) for path, _ in samples]  # type: ignore[union-attr]
    return np.array(sources), np.array([target for _, target in samples])
