"""The labeling map's image: each sample a small disk of its colour, where the view puts it."""

from __future__ import annotations

import numpy as np

from activelab.panel_app.pages import map_raster


def test_each_sample_is_a_disk_of_its_slot_at_its_place_in_the_view():
    view = map_raster.View(0.0, 10.0, 0.0, 5.0, width=100, height=50)
    x = np.array([1.0, 9.0, 5.0, 50.0])  # the last is outside the view
    y = np.array([1.0, 4.0, 2.5, 2.5])
    slots = np.array([2, 3, 4, 5], np.uint8)
    image = map_raster.rasterize(x, y, slots, view)
    assert image.shape == (50, 100) and image.dtype == np.uint8
    # first row at y0: (1, 1) is column 10, row 10; (9, 4) column 90, row 40
    assert image[10, 10] == 2 and image[40, 90] == 3 and image[25, 50] == 4
    assert set(np.unique(image)) == {0, 2, 3, 4}, "outside the view draws nothing"
    disk = int((image == 4).sum())
    assert 13 <= disk <= 25, f"a disk about 5 px across, not {disk} px"
    # later samples are drawn on top
    on_top = map_raster.rasterize(np.array([5.0, 5.0]), np.array([2.5, 2.5]),
                                  np.array([2, 7], np.uint8), view)  # fmt: skip
    assert on_top[25, 50] == 7


def test_zooming_in_keeps_samples_their_size_and_sorts_slots():
    x, y = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    whole = map_raster.padded_view(x, y)
    assert whole.x0 < 0 < 1 < whole.x1 and whole.y0 < 0 < 1 < whole.y1
    near = whole.moved(0.9, 1.1, 0.9, 1.1)
    image = map_raster.rasterize(x, y, np.array([2, 3], np.uint8), near)
    assert set(np.unique(image)) == {0, 3} and (image == 3).sum() < 30
    huge = whole.sized(10_000, 5)
    assert (huge.width, huge.height) == (map_raster.MAX_SIDE, 16), "bounded pixels"

    assert list(map_raster.class_slots(np.array([-1, 0, 9]))) == [1, 2, 11]
    slots = map_raster.certainty_slots(np.array([np.nan, 0.0, 1.0]))
    assert list(slots) == [map_raster.UNLABELED_SLOT, 2, 1 + map_raster.CERTAINTY_LEVELS]
    assert map_raster.with_alpha("#1f77b4") == "#1f77b4d9"
