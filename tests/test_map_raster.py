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


def test_the_label_page_fits_its_image_to_the_map_and_to_a_new_run(local_lab, unique):
    """In process (no browser): the page's image covers the samples; a finished run moves
    them, and the view (and Reset) follows to the new map."""
    from helpers import FAST

    from activelab.panel_app.context import AppContext
    from activelab.panel_app.pages.label import LabelPage
    from activelab.panel_app.vm.state import AppState

    model = local_lab.create_model(unique, config=FAST)
    model.set_labels({0: 0, 1: 1})
    page = LabelPage(AppState(AppContext(local_lab)))
    page.vm.load(model.id)
    page._rebuild_map()

    def covers(data) -> bool:
        view, plot = page.view, page.map_pane.object
        x, y = np.asarray(data["x"]), np.asarray(data["y"])
        return (
            view.x0 < x.min() and x.max() < view.x1 and view.y0 < y.min() and y.max() < view.y1
            and (plot.x_range.start, plot.x_range.end) == (view.x0, view.x1)
            and page.raster_source.data["x"] == [view.x0]
        )  # fmt: skip

    assert covers(page.source.data)
    assert (page.raster_source.data["image"][0] > 0).sum() > 1000, "the samples are drawn"
    assert len(page.labeled_source.data["x"]) == 2, "the labeled samples, above the image"
    before = page.view
    assert "Map from the untrained model" in page.status.object
    model.launch(epochs=1, wait=True, in_process=True)
    assert page.vm.check_for_new_run() is True
    assert "Map from run" in page.status.object  # the status follows the new map
    assert page.view != before and covers(page.source.data)
    assert page.map_pane.object.x_range.reset_start == page.view.x0
