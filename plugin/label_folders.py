"""Labeled samples as an image folder: one sub-folder per class, the layout torchvision's
ImageFolder, Hugging Face `imagefolder`, FiftyOne and Label Studio read.

A model of files (an image folder) copies each labeled file, or links it (`link=True`: no
disk space, but the links break if the source folder moves); a model of arrays (digits,
MNIST) writes each labeled sample as a PNG. A file keeps its relative path in its name
(`a/b.png` becomes `a__b.png`), so two files of the same name never collide.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from activelab.errors import LabelFileError

if TYPE_CHECKING:
    from activelab.models import Model

Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class FolderExport:
    target: Path
    count: int
    how: str  # "copied", "linked" or "written" (PNGs of a data set that has no files)
    per_class: dict[str, int]


def folder_name(class_name: str) -> str:
    """A class name as one safe folder name (a class named '../x' stays inside the target)."""
    name = re.sub(r'[/\\:\x00-\x1f<>"|?*]', "_", class_name).strip()
    return name if name not in ("", ".", "..") else f"_{name or 'unnamed'}_"


def export_folders(
    model: Model, target: Path, link: bool = False, progress: Progress = None
) -> FolderExport:
    """Write the labeled samples of `model` into `target`/<class>/; `target` must be new or
    empty (nothing is overwritten)."""
    target = target.expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise LabelFileError(f"{target} is not an empty folder; export into a new or empty one.")
    labels = dict(model.labels.state.labels)
    if not labels:
        raise LabelFileError(f"Model {model.name!r} has no labels to export yet.")
    classes = model.dataset_info.classes
    names = {k: folder_name(c) for k, c in enumerate(classes)}
    if len(set(names.values())) < len(names):
        names = {k: f"{k:03d}_{n}" for k, n in names.items()}  # two names made the same
    files = model.sample_files()
    ordered = sorted(labels.items())
    for name in set(names[c] for _i, c in ordered):
        (target / name).mkdir(parents=True, exist_ok=True)
    if files is not None:
        how = "linked" if link else "copied"
        for done, (index, label) in enumerate(ordered):
            relative = files.files[index]
            source = files.root / relative
            destination = target / names[label] / relative.replace("/", "__")
            if link:
                os.symlink(source.resolve(), destination)
            else:
                shutil.copy2(source, destination)
            if progress:
                progress(done + 1, len(ordered))
    else:
        how = "written"
        _write_pngs(model, ordered, target, names, progress)
    per_class = Counter(classes[label] for _i, label in ordered)
    return FolderExport(target, len(ordered), how, dict(sorted(per_class.items())))


def _write_pngs(
    model: Model, ordered: list[tuple[int, int]], target: Path, names: dict[int, str],
    progress: Progress,
) -> None:  # fmt: skip
    import numpy as np
    from PIL import Image

    config = model.config
    bundle = model.lab.plugins.get("datasets", config.dataset)(**config.dataset_params).load()
    for done, (index, label) in enumerate(ordered):
        pixels = (bundle.images[index] * 255).round().clip(0, 255).astype(np.uint8)
        picture = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
        Image.fromarray(picture).save(target / names[label] / f"{index:06d}.png")
        if progress:
            progress(done + 1, len(ordered))
