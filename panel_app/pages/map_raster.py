"""The labeling map's points as one image, drawn on the server.

A browser draws 60,000 scatter points one by one on every change of the plot: ~150 ms of
canvas work per key press in headless Chromium here, longer beside a training run. The map
therefore shows its points as an image (one draw), and keeps the scatter for what needs
points: picking, hover, lasso and box selection (not drawn, except the selected points) and
the labeled points above the image. The image is redrawn when the view moves or the colouring
changes, never on a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POINT_RADIUS_PX = 2.5  # the scatter's size 5 markers
ALPHA = 217  # 0.85, the scatter's fill alpha
DEFAULT_SIZE = (1000, 700)  # pixels, until the browser says how large the plot is
MAX_SIDE = 2400  # pixels; a larger plot gets a stretched image


@dataclass(frozen=True)
class View:
    """What the image covers: data ranges and pixels."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = DEFAULT_SIZE[0]
    height: int = DEFAULT_SIZE[1]

    def sized(self, width: int, height: int) -> View:
        width = int(min(max(width, 16), MAX_SIDE))
        height = int(min(max(height, 16), MAX_SIDE))
        return View(self.x0, self.x1, self.y0, self.y1, width, height)

    def moved(self, x0: float, x1: float, y0: float, y1: float) -> View:
        return View(x0, x1, y0, y1, self.width, self.height)

    def image_glyph(self) -> dict[str, list[float]]:
        return {
            "x": [self.x0],
            "y": [self.y0],
            "dw": [self.x1 - self.x0],
            "dh": [self.y1 - self.y0],
        }


def padded_view(x: np.ndarray, y: np.ndarray, pad: float = 0.05) -> View:
    """The data's extent with a margin (what the map opens on, and what Reset returns to)."""
    if len(x) == 0:
        return View(-1.0, 1.0, -1.0, 1.0)
    x0, x1 = float(np.nanmin(x)), float(np.nanmax(x))
    y0, y1 = float(np.nanmin(y)), float(np.nanmax(y))
    dx, dy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    return View(x0 - pad * dx, x1 + pad * dx, y0 - pad * dy, y1 + pad * dy)


TRANSPARENT = "#00000000"
UNLABELED_SLOT = 1  # palette slot of a point without a class (slot 0: no point)
CERTAINTY_LEVELS = 254


def with_alpha(hex_color: str) -> str:
    """'#rrggbb' with the scatter's fill alpha, for the image's palette."""
    return f"{hex_color[:7]}{ALPHA:02x}"


def class_slots(values: np.ndarray) -> np.ndarray:
    """Palette slots of class indices (-1: none): class c is slot c + 2."""
    slots = np.asarray(values, np.int64) + 2
    slots[slots < 2] = UNLABELED_SLOT
    return np.minimum(slots, 255).astype(np.uint8)


def certainty_slots(values: np.ndarray) -> np.ndarray:
    """Palette slots of certainties in [0, 1] (NaN: none), CERTAINTY_LEVELS steps."""
    values = np.asarray(values, np.float64)
    slots = np.full(len(values), UNLABELED_SLOT, np.uint8)
    known = np.isfinite(values)
    steps = np.clip(np.round(values[known] * (CERTAINTY_LEVELS - 1)), 0, CERTAINTY_LEVELS - 1)
    slots[known] = (steps + 2).astype(np.uint8)
    return slots


def _disk(radius: float) -> tuple[np.ndarray, np.ndarray]:
    reach = int(np.ceil(radius))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    inside = dx**2 + dy**2 <= radius**2
    return dx[inside], dy[inside]


def rasterize(x: np.ndarray, y: np.ndarray, slots: np.ndarray, view: View) -> np.ndarray:
    """Draw each point as a small disk of its palette slot (later points on top), slot 0
    elsewhere: a (height, width) uint8 image, its first row at `view.y0` (a quarter of the
    bytes of RGBA; the browser maps slots to colours)."""
    image = np.zeros((view.height, view.width), dtype=np.uint8)
    if len(x) == 0 or view.x1 <= view.x0 or view.y1 <= view.y0:
        return image
    col = (np.asarray(x, np.float64) - view.x0) / (view.x1 - view.x0) * view.width
    row = (np.asarray(y, np.float64) - view.y0) / (view.y1 - view.y0) * view.height
    margin = POINT_RADIUS_PX + 1
    near = (
        np.isfinite(col) & np.isfinite(row)
        & (col > -margin) & (col < view.width + margin)
        & (row > -margin) & (row < view.height + margin)
    )  # fmt: skip
    col, row, slots = col[near].astype(np.int64), row[near].astype(np.int64), slots[near]
    for dx, dy in zip(*_disk(POINT_RADIUS_PX), strict=True):
        c, r = col + dx, row + dy
        inside = (c >= 0) & (c < view.width) & (r >= 0) & (r < view.height)
        image[r[inside], c[inside]] = slots[inside]
    return image
