"""Small multiples of 2-D latent scatters drawn into one RGB image, so an analyzer's picture
needs no browser or plotting server to be made, logged to MLflow and looked at there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Bokeh's Category10, the colors the Label page uses for classes; gray for "no class".
CLASS_COLORS = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    ],
    dtype=np.uint8,
)  # fmt: skip
NO_CLASS = np.array((205, 208, 214), dtype=np.uint8)
PANEL_PX = 220
MARGIN_PX = 24
MAX_POINTS = 6000
LEGEND_ITEM_PX = 90


@dataclass
class ScatterPanel:
    title: str
    xy: np.ndarray  # (n, 2)
    classes: np.ndarray  # (n,), -1 = no class


def to_2d(latent: np.ndarray) -> np.ndarray:
    """The latent itself when it is 2-D, else its two principal components."""
    latent = np.asarray(latent, dtype=np.float64)
    if latent.shape[1] <= 2:
        return np.pad(latent, ((0, 0), (0, 2 - latent.shape[1])))
    centered = latent - latent.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    return centered @ components[:2].T


def draw_panels(
    panels: list[ScatterPanel], classes: Sequence[str] = (), columns: int = 3, seed: int = 0
) -> np.ndarray:
    """One image (height x width x 3, uint8) with a scatter per panel, each scaled to its own
    points, titled, classes colored as on the Label page and named in a legend below."""
    from PIL import Image, ImageDraw

    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    cell = PANEL_PX + MARGIN_PX
    width = columns * cell + MARGIN_PX // 2
    legend_rows = -(-len(classes) // max(1, width // LEGEND_ITEM_PX)) if classes else 0
    image = Image.new("RGB", (width, rows * cell + legend_rows * 18 + 6), "white")
    draw = ImageDraw.Draw(image)
    per_row = max(1, width // LEGEND_ITEM_PX)
    for index, name in enumerate(classes):
        x = MARGIN_PX // 2 + (index % per_row) * LEGEND_ITEM_PX
        y = rows * cell + (index // per_row) * 18 + 4
        rgb = CLASS_COLORS[index % len(CLASS_COLORS)]
        draw.rectangle((x, y + 2, x + 9, y + 11), fill=(int(rgb[0]), int(rgb[1]), int(rgb[2])))
        draw.text((x + 14, y), str(name)[:12], fill=(40, 40, 40))
    rng = np.random.default_rng(seed)
    for index, panel in enumerate(panels):
        left = (index % columns) * cell + MARGIN_PX // 2
        top = (index // columns) * cell + MARGIN_PX
        draw.text((left, top - 16), panel.title, fill=(40, 40, 40))
        draw.rectangle((left, top, left + PANEL_PX, top + PANEL_PX), outline=(210, 210, 210))
        keep = np.arange(len(panel.xy))
        if len(keep) > MAX_POINTS:  # a sample draws the same picture much faster
            keep = np.sort(rng.choice(keep, MAX_POINTS, replace=False))
        xy = np.asarray(panel.xy, dtype=np.float64)[keep]
        point_classes = np.asarray(panel.classes)[keep]
        finite = np.isfinite(xy).all(axis=1)
        xy, point_classes = xy[finite], point_classes[finite]
        if not len(xy):
            continue
        low, high = np.percentile(xy, 0.5, axis=0), np.percentile(xy, 99.5, axis=0)
        span = np.where(high > low, high - low, 1.0)
        pixels = (np.clip((xy - low) / span, 0, 1) * (PANEL_PX - 8) + 4).astype(int)
        # unlabeled first, so classes are drawn on top
        for cls in [-1, *sorted(set(point_classes.tolist()) - {-1})]:
            rgb = NO_CLASS if cls < 0 else CLASS_COLORS[cls % len(CLASS_COLORS)]
            fill = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
            for x, y in pixels[point_classes == cls]:
                px, py = left + x, top + PANEL_PX - y
                draw.rectangle((px - 1, py - 1, px + 1, py + 1), fill=fill)
    return np.asarray(image)
