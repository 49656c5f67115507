"""The app in headless Chromium: the newcomer's journey from an empty store to labels that
survive a reload, and deleting/restoring a model."""

from __future__ import annotations

import re

import pytest
from browser import (
    ARGS,
    CHROMIUM,
    MAP_FRAME,
    MAP_LABELS,
    MAP_LAYERS,
    MAP_PICKS,
    POINT_OF_SAMPLE,
    POINTS_ON_SCREEN,
    chromium_missing,
)
from helpers import mlflow_client, wait_until
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from served import start_app

from activelab import Lab

pytestmark = pytest.mark.browser
TIMEOUT = 30_000


@pytest.fixture(scope="session")
def browser():
    problem = chromium_missing()
    if problem:
        pytest.fail(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def app(tmp_path, request, empty_store):
    served = start_app(
        tmp_path / "home", "--no-mlflow-ui", "--log-level", "info", empty_store=empty_store
    )
    yield served
    served.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("the app's log:\n" + served.output()[-6000:])
    marker = request.node.get_closest_marker("app_log_allows")
    # a browser that leaves mid-message closes its websocket: Tornado logs it, no fault of ours
    allowed = (*(marker.args if marker else ()), "StreamClosedError", "WebSocketClosedError")
    unexpected = [t for t in tracebacks(served.output()) if not any(a in t for a in allowed)]
    assert unexpected == [], "the app's log shows exceptions:\n" + "\n\n".join(unexpected)


def tracebacks(log: str) -> list[str]:
    """Each traceback in a log, up to and including its exception line."""
    found = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = block.splitlines()
        end = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), 0)
        found.append("\n".join(lines[: end + 1]))
    return found


@pytest.fixture
def page(browser, request, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    # with the stack, so a rare error in a library's code can be traced to its source
    opened.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack}"))
    yield opened
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:  # what the page showed, for the person debugging
        shot = tmp_path / "failure.png"
        opened.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failed page: {shot}")
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


def lab_of(app) -> Lab:
    return Lab(tracking_uri=app.tracking_uri, home=app.home)


def map_labels(page) -> list[int]:
    return page.evaluate(MAP_LABELS)


def wait_for_map(page) -> None:
    page.get_by_text("Map from").wait_for()
    # the plot's view exists, has its size and has drawn every renderer (clicks land on points)
    page.wait_for_function(
        """() => {
          if (!(window.Bokeh && Bokeh.documents.length)) return false;
          const plot = Bokeh.documents[Bokeh.documents.length - 1].get_model_by_name('label-map');
          const view = plot && Bokeh.index.find_one(plot);
          return Boolean(view && view.frame.bbox.width > 0 && view.has_finished());
        }"""
    )


def test_newcomer_journey(app, page):
    page.goto(app.url + "/")
    page.get_by_text("No models yet").wait_for()  # the empty state leads the way

    page.get_by_role("button", name="Create your first model").click()
    page.get_by_placeholder("model-001 if empty").fill("digits <demo>")
    page.get_by_role("button", name="Create", exact=True).click()
    page.get_by_text("digits <demo>").first.wait_for()  # escaped, shown as typed

    wait_for_map(page)  # a new model opens on its Label page: labeling comes next
    wait_until(  # the model is in the URL (it follows the page a moment after it shows)
        lambda: "page=label" in page.url and "model=" in page.url,
        timeout=30,
        message="the URL to name the Label page and the model",
    )
    model = lab_of(app).get_model("digits <demo>")

    # click a point, then press a key: the one sample nearest the click is labeled and saved
    x, y = page.evaluate(POINT_OF_SAMPLE, 42)
    page.mouse.click(x, y)
    page.get_by_text("Click a point").wait_for(state="hidden")
    page.get_by_text(re.compile(r"^1 selected —")).wait_for()
    page.keyboard.press("7")
    page.get_by_text("Saved:").wait_for()
    model.labels.refresh()
    labeled = model.labels.as_dict()
    assert len(labeled) == 1 and set(labeled.values()) == {7}, "one click labels one sample"
    (picked,) = labeled
    px, py = page.evaluate(POINT_OF_SAMPLE, picked)
    assert (px - x) ** 2 + (py - y) ** 2 <= 1.5**2, "the sample under the click"
    first_round = set(labeled)
    wait_until(  # patched in the browser (the patch follows the save)
        lambda: all(map_labels(page)[i] == 7 for i in first_round),
        timeout=30,
        message="the label to reach the browser's map",
    )

    # lasso a region: the whole selection gets one label with one key
    left, top, width, height = page.evaluate(MAP_FRAME)
    page.mouse.move(left + width * 0.30, top + height * 0.30)
    page.mouse.down()
    for fx, fy in ((0.70, 0.30), (0.70, 0.70), (0.30, 0.70), (0.30, 0.31)):
        page.mouse.move(left + width * fx, top + height * fy, steps=8)
    page.mouse.up()
    page.get_by_text("selected —").filter(has_not_text="0 selected").wait_for()
    page.keyboard.press("2")

    def lassoed() -> set[int]:
        model.labels.refresh()
        return {i for i, v in model.labels.as_dict().items() if v == 2}

    lasso = wait_until(lassoed, timeout=30, message="the lasso selection to be labeled")
    assert len(lasso) > 20, "the lasso should catch many points"
    wait_until(
        lambda: all(map_labels(page)[i] == 2 for i in lasso),
        timeout=30,
        message="the lasso's labels to reach the browser's map",
    )

    # undo takes the lasso change back, as one change
    page.get_by_role("button", name="Undo").click()
    page.get_by_text("Saved:").filter(has_text="undone").wait_for()
    model.labels.refresh()
    assert set(model.labels.as_dict()) == first_round

    # a reload (a new session) shows the same labels: they live in MLflow
    page.reload()
    wait_for_map(page)
    after_reload = map_labels(page)
    assert {i for i, v in enumerate(after_reload) if v >= 0} == first_round
    assert after_reload[42] == 7

    # the samples are one image drawn on the server for the view: zooming in draws it again
    # for the new view (the labeled samples are their own layer above it)
    layers = page.evaluate(MAP_LAYERS)
    assert layers["labeled"] == len(first_round)
    assert layers["image"] == pytest.approx(layers["view"])
    left, top, width, height = page.evaluate(MAP_FRAME)
    page.mouse.move(left + width / 2, top + height / 2)
    page.mouse.wheel(0, -400)
    wait_until(
        lambda: (
            (now := page.evaluate(MAP_LAYERS))["view"] != layers["view"]
            and now["image"] == pytest.approx(now["view"])
        ),
        timeout=30,
        message="the map's image to be drawn again for the zoomed view",
    )


def test_a_lasso_adds_to_or_takes_from_the_selection_and_hover_tells_the_label(app, page):
    """Picking happens in the browser (the 60,000 samples are an image): a lasso with shift
    adds its samples to the selection, with shift and ctrl takes them away, as Bokeh's own
    select tools do; hovering a sample tells its label as of the last key press."""
    model = lab_of(app).create_model("lasso-modes")
    page.goto(f"{app.url}/?page=label&model={model.id}")
    wait_for_map(page)
    left, top, width, height = page.evaluate(MAP_FRAME)
    box = (left + width * 0.25, top + height * 0.25, left + width * 0.6, top + height * 0.6)
    points = page.evaluate(POINTS_ON_SCREEN)

    def inside(margin: float) -> set[int]:
        x0, y0, x1, y1 = box
        return {
            i
            for i, (x, y) in enumerate(points)
            if x0 - margin < x < x1 + margin and y0 - margin < y < y1 + margin
        }

    surely_in, maybe_in = inside(-2), inside(2)  # (a point on the lasso's edge may go either way)
    outside = next(i for i in range(len(points)) if i not in maybe_in)
    page.mouse.click(*points[outside])
    wait_until(lambda: page.evaluate(MAP_PICKS) == [outside], message="the clicked sample picked")

    def lasso(*modifiers: str) -> None:
        x0, y0, x1, y1 = box
        for key in modifiers:
            page.keyboard.down(key)
        page.mouse.move(x0, y0)
        page.mouse.down()
        for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
            page.mouse.move(x, y, steps=6)
        page.mouse.up()
        for key in reversed(modifiers):
            page.keyboard.up(key)

    lasso("Shift")
    added = wait_until(
        lambda: (picked := set(page.evaluate(MAP_PICKS))) != {outside} and picked,
        message="the lasso's samples added to the selection",
    )
    assert outside in added and surely_in <= added <= maybe_in | {outside}
    assert len(surely_in) > 20, "the lasso should catch many points"
    page.get_by_text(re.compile(rf"^{len(added)} selected —")).wait_for()  # the server has it

    lasso("Shift", "Control")
    wait_until(
        lambda: page.evaluate(MAP_PICKS) == [outside], message="the lasso's samples taken away"
    )
    page.get_by_text(re.compile(r"^1 selected —")).wait_for()
    page.keyboard.press("3")
    wait_until(lambda: map_labels(page)[outside] == 3, message="the label in the browser")

    page.mouse.move(*points[outside])
    rows = page.locator(".bk-tooltip-row-label")
    rows.first.wait_for()
    # one tooltip per sample under the pointer (samples of an untrained model overlap)
    names = [label.rstrip(": ") for label in rows.all_inner_texts()]
    values = page.locator(".bk-tooltip-row-value").all_inner_texts()
    per_sample = len(set(names))
    tooltips = [
        dict(zip(names[at : at + per_sample], values[at : at + per_sample], strict=True))
        for at in range(0, len(names), per_sample)
    ]
    hovered = [t for t in tooltips if t["sample"] == str(outside)]
    assert len(hovered) == 1 and hovered[0]["label"] == "3", tooltips


def test_delete_and_restore_a_model(app, page):
    lab = lab_of(app)
    lab.create_model("keep-me").set_label(3, 3)
    lab.create_model("throw-away")
    page.goto(app.url + "/")
    page.get_by_text("throw-away").wait_for()
    card = page.locator(".al-card").filter(has_text="throw-away")
    card.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Delete model").click()
    page.get_by_text("Deleted “throw-away”.").wait_for()
    page.get_by_role("heading", name="throw-away").wait_for(state="detached")
    assert [c.name for c in lab.list_models()] == ["keep-me"]
    page.get_by_role("button", name="Undo").click()
    page.get_by_role("heading", name="throw-away").wait_for()
    assert {c.name for c in lab.list_models()} == {"keep-me", "throw-away"}
    assert lab.get_model("keep-me").labels.get(3) == 3


def test_navigation_keeps_the_model_in_use(app, page):
    model = lab_of(app).create_model("navigated")
    page.goto(f"{app.url}/?page=label&model={model.id}")
    wait_for_map(page)
    page.get_by_role("button", name="Train").click()
    page.get_by_role("button", name="Start training").wait_for()

    def url_has(page_name: str) -> bool:  # the URL follows the page a moment after it shows
        address = page.evaluate("() => window.location.href")  # the browser's own word
        return f"page={page_name}" in address and f"model={model.id}" in address

    wait_until(lambda: url_has("train"), timeout=30, message="the URL to name the Train page")
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text("No run with a checkpoint yet").wait_for()  # says what to do first
    wait_until(lambda: url_has("evaluate"), timeout=30, message="the URL to name Evaluate")
    page.go_back()  # the browser's Back returns to the page before, with its model
    page.get_by_role("button", name="Start training").wait_for()
    page.get_by_role("button", name="Settings", exact=True).click()
    page.get_by_text("Tracking URI").wait_for()
    page.get_by_role("button", name="Label").click()
    wait_for_map(page)
    # the model came along: named in the header and chosen in the page's model picker
    page.locator(".al-header b", has_text="navigated").wait_for()
    assert page.get_by_role("combobox").first.input_value() == "navigated"


def test_labels_csv_import_and_export_on_the_label_page(app, page, tmp_path):
    model = lab_of(app).create_model("csv-labels")
    page.goto(f"{app.url}/?page=label&model={model.id}")
    wait_for_map(page)
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_index,label\n1,3\n99999,4\n")
    page.locator("input[type=file]").set_input_files(str(bad))
    page.get_by_text("Line 3").wait_for()  # names the line; nothing is saved
    assert lab_of(app).get_model(model.id).labels.as_dict() == {}
    good = tmp_path / "good.csv"
    good.write_text("sample_index,label\n1,3\n2,4\n3,4\n")
    page.locator("input[type=file]").set_input_files(str(good))
    page.get_by_text("Saved: 3 sample(s) imported").wait_for()
    wait_until(lambda: map_labels(page)[1:4] == [3, 4, 4], message="the map recolored")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    assert download.value.suggested_filename == "csv-labels-labels.csv"
    saved = tmp_path / "exported.csv"
    download.value.save_as(saved)
    assert saved.read_text().splitlines() == ["sample_index,label", "1,3", "2,4", "3,4"]


def test_label_ten_samples_from_the_queue_by_keys_only(app, page):
    """Q queues the next ten; each digit labels the sample shown and moves to the next."""
    model = lab_of(app).create_model("queue")
    page.goto(f"{app.url}/?page=label&model={model.id}")
    wait_for_map(page)
    page.keyboard.press("n")  # the next ten, as thumbnails of the selection
    wait_until(lambda: page.locator(".al-gallery img").count() == 10, message="ten thumbnails")
    page.keyboard.press("q")
    for n in range(10):
        page.get_by_text(f"Sample {n + 1} of 10").wait_for()  # the key moved on to the next
        page.keyboard.press(str(n))
    page.get_by_text("Queue done").wait_for()
    labels = lab_of(app).get_model(model.id).labels.as_dict()
    # ten keys, ten different samples, each with its own key's class
    assert sorted(labels.values()) == list(range(10)) and len(labels) == 10, labels
    wait_until(lambda: sum(v >= 0 for v in map_labels(page)) == 10, message="the map shows them")
    page.keyboard.press("Escape")
    page.get_by_text("Label one by one (Q)").wait_for()


def test_the_app_over_a_tracking_server(mlflow_server, page, tmp_path, unique):
    """`MLFLOW_TRACKING_URI=http://...`: cards, links and label writes go through the server."""
    served = start_app(tmp_path / "home", "--no-mlflow-ui", tracking_uri=mlflow_server.url)
    try:
        lab = Lab(tracking_uri=mlflow_server.url, home=tmp_path / "client")
        model = lab.create_model(f"{unique}-remote")
        page.goto(f"{served.url}/?page=label&model={model.id}")
        wait_for_map(page)
        link = page.get_by_role("link", name="Open in MLflow ↗").first
        assert link.get_attribute("href").startswith(mlflow_server.url)
        labels = tmp_path / "labels.csv"
        labels.write_text("sample_index,label\n4,7\n")
        page.locator("input[type=file]").set_input_files(str(labels))
        page.get_by_text("Saved: 1 sample(s) imported").wait_for()
        # another client of the server sees the label, stored as the model's artifacts
        assert Lab(tracking_uri=mlflow_server.url, home=tmp_path / "other").get_model(
            model.id
        ).labels.as_dict() == {4: 7}
    finally:
        served.stop()


def test_recent_activity_leads_to_the_run_of_its_model(app, page):
    from helpers import logged_run

    lab = lab_of(app)
    model = lab.create_model("active")
    lab.create_model("quiet")
    logged_run(lab, model, "0.001", 1.0)
    page.goto(app.url + "/")
    page.get_by_role("link", name="active #1").click()
    page.get_by_role("button", name="Start training").wait_for()

    def url_has(page_name: str) -> bool:  # the URL follows the page a moment after it shows
        address = page.evaluate("() => window.location.href")  # the browser's own word
        return f"page={page_name}" in address and f"model={model.id}" in address

    wait_until(lambda: url_has("train"), timeout=30, message="the URL to name the Train page")
    page.locator(".al-header b", has_text="active").wait_for()


def test_the_page_says_when_the_server_is_lost_and_recovers(app, page):
    from urllib.parse import urlparse

    lab_of(app).create_model("survives-a-restart")
    page.goto(app.url + "/")
    page.get_by_role("heading", name="survives-a-restart").wait_for()
    banner = page.locator(".al-offline")
    assert not banner.is_visible()
    app.stop()
    banner.wait_for(state="visible")
    assert "Lost the connection" in banner.inner_text()
    # the same server comes back on the same port: the page reloads itself
    again = start_app(app.home, "--no-mlflow-ui", port=urlparse(app.url).port)
    try:
        page.get_by_role("heading", name="survives-a-restart").wait_for()
        page.wait_for_function("() => !document.querySelector('.al-offline')"
                               " || getComputedStyle(document.querySelector('.al-offline'))"
                               ".display === 'none'")  # fmt: skip
    finally:
        again.stop()


def test_the_page_says_when_the_tracking_server_is_unreachable(killable_server, page, tmp_path):
    from activelab import Lab

    served = start_app(tmp_path / "home", "--no-mlflow-ui", tracking_uri=killable_server.url)
    try:
        Lab(tracking_uri=killable_server.url, home=served.home).create_model("on-a-server")
        page.goto(served.url + "/")
        page.get_by_role("heading", name="on-a-server").wait_for()
        banner = page.get_by_text("Tracking server unreachable, retrying")
        killable_server.kill()
        banner.wait_for()  # the app keeps answering and says what is wrong
        killable_server.start()
        banner.wait_for(state="hidden")
        page.get_by_role("heading", name="on-a-server").wait_for()
    finally:
        served.stop()
    assert tracebacks(served.output()) == [], served.output()[-4000:]


def test_tablet_width_layout(app, browser):
    lab_of(app).create_model("on-a-tablet")
    context = browser.new_context(viewport={"width": 820, "height": 1180})
    tablet = context.new_page()
    tablet.set_default_timeout(TIMEOUT)
    try:
        tablet.goto(app.url + "/")
        tablet.get_by_role("heading", name="on-a-tablet").wait_for()
        width = tablet.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 820, "no horizontal scrolling on a tablet"
    finally:
        context.close()


def overlap(a: dict, b: dict) -> bool:
    """Whether two bounding boxes share any area."""
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 900)], ids=["phone", "desktop"])
def test_every_page_fits_the_screen_on_a_phone_and_a_desktop(app, browser, width, height):
    """No horizontal scrolling on any page, every plot nearly as wide as its panel; on a phone
    the map takes the full width and the side panel (the class buttons) comes below it."""
    from helpers import FAST

    model = lab_of(app).create_model("fits", config=FAST)
    model.set_labels({i: i % 10 for i in range(20)})
    trained = model.launch(epochs=1, system_metrics=False, in_process=True)
    assert trained.wait(timeout=180) == "FINISHED", trained.summary.error
    # a phone as Playwright emulates one: a mobile browser honours (or lacks) the viewport tag
    phone = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2} if width < 600 else {}
    context = browser.new_context(viewport={"width": width, "height": height}, **phone)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        for name, ready in [("home", "Recent activity"), ("label", "Map from"),
                            ("train", "Job history"), ("evaluate", "Metrics per task"),
                            ("compare", "Final and best figures"), ("plugins", "Plugins"),
                            ("settings", "Tracking URI")]:  # fmt: skip
            page.goto(f"{app.url}/?page={name}&model={model.id}")
            page.get_by_text(ready).first.wait_for()
            scroll = page.evaluate("() => document.documentElement.scrollWidth")
            assert scroll <= width, f"the {name} page scrolls sideways at {width} px: {scroll}"
            laid_out = page.evaluate("() => window.innerWidth")
            assert laid_out == width, f"the {name} page is laid out {laid_out} px wide, shrunk"
            if name in ("label", "train", "compare"):  # pages with plots: each nearly as wide
                page.locator(".bk-Canvas").first.wait_for()  # as the screen on a phone
                canvases = page.locator(".bk-Canvas")
                boxes = [canvases.nth(i).bounding_box() for i in range(canvases.count())]
                widths = [b["width"] for b in boxes if b and b["width"] > 0]
                least = 0.8 * (width - 48) if width < 600 else 300
                assert widths and min(widths) >= least, f"a plot on {name} is {min(widths)} px"
            if name == "label":
                wait_for_map(page)
                plot = page.locator(".bk-Canvas").first.bounding_box()
                button = page.get_by_role("button", name="0", exact=True).bounding_box()
                if width < 600:
                    assert plot["width"] > 0.8 * width, plot
                    assert button["y"] > plot["y"] + plot["height"], "side panel below the map"
                else:
                    assert button["x"] > plot["x"] + plot["width"], "side panel beside the map"
                # the legend's text overlaps neither the map, nor the help, nor a button
                legend = page.locator(".al-legend-rows").bounding_box()
                help_text = page.get_by_text("Click a point to see its image").bounding_box()
                for name, other in [("map", plot), ("help", help_text), ("button 0", button)]:
                    assert not overlap(legend, other), f"the legend overlaps the {name}"
                # one by one: both pictures (captioned) within the screen; on a phone the
                # picture comes above the map
                page.get_by_role("button", name="Label one by one (Q)").click()
                page.get_by_text("model's reconstruction").wait_for()
                scroll = page.evaluate("() => document.documentElement.scrollWidth")
                assert scroll <= width, f"the queue widens the page to {scroll} px"
                sample = page.locator(".al-caption", has_text="sample").first.bounding_box()
                recon = page.get_by_text("model's reconstruction").bounding_box()
                assert recon["x"] + recon["width"] <= width and sample["x"] >= 0
                queue_plot = page.locator(".bk-Canvas").first.bounding_box()
                if width < 600:
                    assert sample["y"] < queue_plot["y"], "the picture above the map on a phone"
    finally:
        context.close()


def test_touch_on_a_phone_selects_and_labels_samples_on_the_map(app, browser):
    model = lab_of(app).create_model("by-touch")
    phone = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}
    context = browser.new_context(viewport={"width": 390, "height": 844}, **phone)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        page.goto(f"{app.url}/?page=label&model={model.id}")
        wait_for_map(page)
        x, y = page.evaluate(POINT_OF_SAMPLE, 42)
        scrolled = page.evaluate("() => window.scrollY")
        page.touchscreen.tap(x, y)  # a finger on a sample selects it
        page.get_by_text(re.compile(r"^1 selected —")).wait_for()
        page.get_by_role("button", name="7", exact=True).tap()  # and a class button labels it
        page.get_by_text("Saved:").wait_for()
        labeled = lab_of(app).get_model(model.id).labels.as_dict()
        (picked,) = labeled  # one sample, the one under the finger
        px, py = page.evaluate(POINT_OF_SAMPLE, picked)
        py += page.evaluate("() => window.scrollY") - scrolled  # the page scrolled to the button
        assert labeled[picked] == 7 and (px - x) ** 2 + (py - y) ** 2 <= 1.5**2
    finally:
        context.close()


# The last step of a curve on the Train page's step plot, as the browser has it.
LAST_STEP = """(key) => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  // a redraw (new run, log scale) replaces the figure; the shown one has a view
  const plot = [...doc.all_models].find(
    (m) => m.name === "train-steps" && Bokeh.index.find_one(m) != null);
  const line = plot && plot.renderers.find((r) => r.name === key);
  if (!line) return -1;
  const steps = line.data_source.data.step;
  return steps.length ? Number(steps[steps.length - 1]) : -1;
}"""


# The Train page's per-epoch plots shown: name, whether it is an "other figure", its lines.
EPOCH_PLOTS = """() => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  return [...doc.all_models]
    .filter((m) => m.name && m.name.startsWith("train-epochs-") && Bokeh.index.find_one(m) != null)
    .map((m) => ({name: m.name, other: m.name.startsWith("train-epochs-eval/"),
                  lines: m.renderers.filter((r) => r.name).length}));
}"""


def test_the_train_page_keeps_its_actions_in_view_while_it_scrolls(app, browser):
    from helpers import FAST

    model = lab_of(app).create_model("sticky", config=FAST)
    context = browser.new_context(viewport={"width": 1280, "height": 560})
    page = context.new_page()
    try:
        page.goto(f"{app.url}/?page=train&model={model.id}")
        start = page.get_by_role("button", name="Start training")
        start.wait_for()
        history = page.get_by_text("Job history")
        history.wait_for()
        before = history.bounding_box()
        page.mouse.move(640, 400)
        page.mouse.wheel(0, 2000)
        wait_until(
            lambda: history.bounding_box()["y"] < before["y"] - 100,
            message="the page scrolled",
        )
        box = start.bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 560, box
    finally:
        context.close()


def test_train_from_the_app_stop_and_continue(app, page):
    from helpers import FAST, drop_task_file

    lab = lab_of(app)
    model = lab.create_model("trained-here", config=FAST)
    model.set_labels({i: i % 10 for i in range(30)})
    page.goto(f"{app.url}/?page=train&model={model.id}")
    page.get_by_text("No runs yet").wait_for()

    # a task file dropped into the watched folder shows up without a reload
    drop_task_file("latent_norm.py", app.home / "tasks")
    kinds = page.get_by_role("combobox", name="Task class")
    wait_until(
        lambda: "latent_norm" in kinds.evaluate("e => Array.from(e.options).map(o => o.value)"),
        timeout=30,
        message="the dropped task in the list",
    )
    kinds.select_option("latent_norm")
    page.get_by_role("textbox", name="Name").fill("near_origin")
    page.get_by_role("button", name="Add task").click()
    page.get_by_text("near_origin (latent_norm)").wait_for()
    assert "near_origin" in {t.name for t in lab.get_model(model.id).config.tasks}
    # a broken task file shows its error (file and line), and everything else keeps working
    (app.home / "tasks" / "broken_task.py").write_text("import param\ndef oops(:\n")
    page.get_by_text("Plugins that did not load").wait_for()
    page.get_by_text("broken_task.py:2").wait_for()

    # start a long run; the curves grow live
    epochs = page.locator(".al-epochs input")
    epochs.fill("300")
    epochs.press("Enter")
    page.get_by_text("· 300 epochs").first.wait_for()  # the run name preview follows
    page.get_by_role("button", name="Start training").click()
    # one's own run training is a state, said plainly: not a warning to stop it
    page.get_by_text("Start is available when").wait_for(timeout=60_000)
    assert page.locator(".al-banner", has_text="still training").count() == 0
    page.wait_for_function(f"() => ({LAST_STEP})('loss/total') > 3", timeout=120_000)
    first_seen = page.evaluate(LAST_STEP, "loss/total")
    page.wait_for_function(f"() => ({LAST_STEP})('loss/total') > {first_seen}", timeout=60_000)
    assert page.evaluate(LAST_STEP, "loss/near_origin") > 0  # the dropped task is trained
    page.get_by_text("it/s").wait_for()  # the progress line: speed, ETA, loss, trend

    # stop it: KILLED with a checkpoint, then continue from that checkpoint
    page.get_by_role("button", name="Stop").click()
    page.locator(".notyf__message", has_text="” stopped.").wait_for(timeout=120_000)  # a toast
    page.locator(".al-badge", has_text="stopped").first.wait_for()
    # "Stop requested" gives way to what happened once the run has ended
    page.get_by_text("stopped; continue it from its checkpoint").wait_for()
    assert page.get_by_text("Stop requested").count() == 0
    first = lab.get_model(model.id).runs()[0]
    assert first.status == "KILLED" and first.last_checkpoint
    epochs.fill("1")
    epochs.press("Enter")
    page.get_by_role("button", name="Continue from checkpoint").click()

    def continued():
        runs = lab.get_model(model.id).runs()
        return len(runs) == 2 and runs[0].status == "FINISHED" and runs

    runs = wait_until(continued, timeout=180, message="the continued run to finish")
    page.locator(".notyf__message", has_text="” finished.").wait_for()
    second = runs[0]
    run = mlflow_client(lab).get_run(second.run_id)
    assert run.data.tags["mlflow.parentRunId"] == first.run_id  # lineage, as MLflow shows it
    assert second.lineage_epochs == first.lineage_epochs + 1

    # both runs in the job history, with their statuses
    page.locator(".al-badge", has_text="finished").first.wait_for(timeout=60_000)
    history = page.locator(".tabulator")
    history.get_by_text("stopped").wait_for()
    history.get_by_text("finished").wait_for()
    # a click on the older run loads its curves
    older = history.locator(".tabulator-cell[tabulator-field='run']", has_text=first.name)
    title = page.locator("h3.al-h", has_text=first.name)

    def shown_older() -> bool:
        # Under a CPU hog a click on the table is still lost now and then (once in 3 runs,
        # after changed cells became patches instead of a new table): click again, bounded.
        older.click()
        try:
            title.wait_for(timeout=5_000)
        except PlaywrightTimeoutError:
            return False
        return True

    wait_until(shown_older, timeout=60, message="the older run in the monitor")
    history = mlflow_client(lab).get_metric_history(first.run_id, "loss/total")
    last_step = max(m.step for m in history)
    page.wait_for_function(f"() => ({LAST_STEP})('loss/total') === {last_step}", timeout=60_000)
    # figures with nothing in common (mse, active dimensions...) each get their own axis
    page.wait_for_function(f"() => ({EPOCH_PLOTS})().some((p) => p.other)", timeout=60_000)
    plots = page.evaluate(EPOCH_PLOTS)
    assert all(p["lines"] == 1 for p in plots if p["other"]), plots
    assert "train-epochs-other" not in [p["name"] for p in plots]


def register_on_page(page, alias: str, version: int) -> None:
    """Fill the alias, press Register model, wait for the page to say what it made."""
    field = page.get_by_role("textbox", name="Alias")
    field.fill(alias)
    field.press("Enter")
    page.get_by_role("button", name="Register model").click()
    said = f"Registered 'to-register' version {version} as models:/to-register@{alias}"
    page.get_by_text(said).wait_for(timeout=120_000)


def test_a_tab_closed_while_the_train_page_streams_leaves_the_log_clean(app, browser):
    from helpers import FAST

    lab = lab_of(app)
    model = lab.create_model("closed-tab", config=FAST)
    model.set_labels({i: i % 10 for i in range(30)})
    run = model.launch(epochs=60)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    streaming = context.new_page()
    streaming.set_default_timeout(TIMEOUT)
    streaming.goto(f"{app.url}/?page=train&model={model.id}")
    streaming.get_by_text("it/s").wait_for(timeout=120_000)  # the run's progress line
    streaming.wait_for_function(f"() => ({LAST_STEP})('loss/total') > 3", timeout=120_000)
    before = len(app.output())
    context.close()  # the tab goes away mid-stream
    assert run.wait(timeout=300) == "FINISHED"  # and the run goes on to its end
    # the app goes on serving: a new tab sees the run finished
    again = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        fresh = again.new_page()
        fresh.goto(f"{app.url}/?page=train&model={model.id}")
        fresh.locator(".al-badge", has_text="finished").first.wait_for(timeout=60_000)
    finally:
        again.close()
    after = app.output()[before:]
    for noise in ("Traceback", "Task exception was never retrieved", "Failed sending message"):
        assert noise not in after, f"the app's log after a closed tab:\n{after[-3000:]}"


def test_register_a_finished_run_from_the_train_and_compare_pages(app, page):
    from helpers import FAST

    lab = lab_of(app)
    model = lab.create_model("to-register", config={**FAST, "trainer.log_model": "true"})
    model.set_labels({i: i % 10 for i in range(30)})
    handle = model.launch(epochs=1, system_metrics=False, in_process=True)
    assert handle.wait(timeout=180) == "FINISHED", handle.summary.error
    page.goto(f"{app.url}/?page=train&model={model.id}")
    page.get_by_role("button", name="Register model").wait_for(timeout=60_000)
    register_on_page(page, "champion", 1)
    client = mlflow_client(lab)
    assert client.get_model_version_by_alias("to-register", "champion").run_id == handle.run_id
    # from the Compare page too: the chosen finished runs can be registered
    page.goto(f"{app.url}/?page=compare&model={model.id}")
    page.get_by_role("combobox", name="Register the model of").wait_for(timeout=60_000)
    register_on_page(page, "staging", 2)
    assert str(client.get_model_version_by_alias("to-register", "staging").version) == "2"
    # the model's card on Home says which version is registered
    page.goto(f"{app.url}/?page=home")
    page.locator(".al-figures", has_text="version 2 @staging").first.wait_for(timeout=60_000)


def test_compare_two_runs_of_two_models(app, page, tmp_path):
    import csv

    from helpers import logged_run

    lab = lab_of(app)
    first, second = lab.create_model("cmp-a"), lab.create_model("cmp-b")
    a = logged_run(lab, first, "0.001", 1.0)
    b = logged_run(lab, second, "0.0005", 0.5)
    page.goto(f"{app.url}/?page=compare")
    page.get_by_text("Runs to compare").wait_for()
    pickers = page.locator("input.choices__input--cloned")  # models, runs, metrics
    for name in ("cmp-a / cmp-a #1", "cmp-b / cmp-b #1"):
        pickers.nth(1).click()
        page.locator(f'.choices__item--choice[data-value="{name}"]').click()
        page.keyboard.press("Escape")
    # the overlay: one line per run for the chosen metric
    page.wait_for_function(
        """() => {
      const doc = Bokeh.documents[Bokeh.documents.length - 1];
      // the plot is redrawn as runs are chosen: any drawn one with both lines will do
      return [...doc.all_models].some((m) => m.name === "compare-plot"
        && Bokeh.index.find_one(m) != null
        && m.renderers.filter((r) => r.name === "loss/total").length === 2);
    }""",
        timeout=30_000,
    )
    # the diff: only the learning rate differs
    params = page.locator(".tabulator").last
    params.get_by_text("trainer.lr").wait_for()
    # the table of the first run alone listed every param; with both, the shared ones go
    params.get_by_text("trainer.batch_size").wait_for(state="detached")
    params.get_by_text("0.0005").wait_for()
    # the CSV holds every point of both runs
    with page.expect_download() as download:
        page.get_by_role("button", name="Curves as CSV").click()
    saved = tmp_path / "compare.csv"
    download.value.save_as(saved)
    with saved.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["run_id"] for r in rows} == {a, b}
    assert len(rows) == 2 * 30 and {r["metric"] for r in rows} == {"loss/total"}


def test_evaluate_a_trained_model(app, page):
    from helpers import FAST, drop_task_file

    lab = lab_of(app)
    model = lab.create_model("evaluated", config=FAST)
    model.set_labels({i: i % 10 for i in range(40)})
    handle = model.launch(epochs=2, system_metrics=False, in_process=True)
    assert handle.wait(timeout=300, follow_ups=True) == "FINISHED"
    page.goto(f"{app.url}/?page=evaluate&model={model.id}")
    # the automatic evaluation after training is there; the grid is drawn
    page.get_by_text("labeled_accuracy").first.wait_for()
    page.get_by_text("Each sample: original | reconstruction").wait_for()
    page.get_by_role("button", name="Evaluate checkpoint").click()
    page.locator(".notyf__message", has_text="Evaluation logged to MLflow.").wait_for()
    page.get_by_role("button", name="Run analyzer").click()
    page.get_by_text("Logged to the run as analyzers/confusion_matrix.csv").wait_for()
    page.get_by_text("network.encoder", exact=False).first.wait_for()  # the model summary
    evaluations = mlflow_client(lab).search_runs(
        [model.id], filter_string=f"tags.`activelab.eval_of` = '{handle.run_id}'"
    )
    assert len(evaluations) == 2  # after training, and the click
    # a slow analyzer dropped into the watched folder shows how far it is while it runs
    drop_task_file("slow_analyzer.py", app.home / "tasks")
    picker = page.get_by_role("combobox").nth(2)
    wait_until(  # no reload: the page follows the plugin set
        lambda: "slow_steps" in " ".join(picker.locator("option").all_inner_texts()),
        message="the dropped analyzer to be listed",
    )
    picker.select_option(value=next(
        v for v in picker.locator("option").evaluate_all("(os) => os.map((o) => o.value)")
        if "slow_steps" in v
    ))  # fmt: skip
    page.get_by_role("button", name="Run analyzer").click()
    page.get_by_text("1 of 3 done · about").wait_for()  # progress with time left
    (app.home / "tasks" / "slow_analyzer.go").touch()  # the analyzer goes on only now
    page.get_by_text("All three steps ran.").wait_for()


PAYLOAD = '<img src=x onerror="window.__xss = (window.__xss || 0) + 1">'


def test_names_with_markup_show_as_typed_in_pickers_and_notifications(app, page):
    """Model and run names are anyone's text on a shared server: they never run as HTML."""
    from helpers import logged_run

    from activelab import keys

    lab = lab_of(app)
    model = lab.create_model(f"m {PAYLOAD}")
    logged_run(lab, model, "0.001", 1.0)
    page.goto(f"{app.url}/?page=compare&model={model.id}")
    page.get_by_text("Runs to compare").wait_for()
    # the compare page preselects the model and its run: both pickers show the names as text
    page.locator(".choices__item", has_text=f"m {PAYLOAD} #1").first.wait_for()
    page.locator(".choices__item", has_text=f"m {PAYLOAD}").first.wait_for()

    # a run that starts and fails while the page is open (the page took its first look when
    # it was built): its name and error in a notification
    client = mlflow_client(lab)
    run = client.create_run(model.id, run_name=f"r {PAYLOAD}", tags={keys.RUN_KIND: "train"})
    run_id = run.info.run_id
    client.set_tag(run_id, keys.ERROR, f"boom {PAYLOAD}")
    client.set_terminated(run_id, "FAILED")
    client.set_experiment_tag(model.id, keys.LATEST_RUN, run_id)
    client.set_experiment_tag(model.id, keys.LATEST_RUN_STATUS, "FAILED")
    toast = page.locator(".notyf__message", has_text=f"r {PAYLOAD}")
    toast.wait_for(timeout=30_000)
    assert f"boom {PAYLOAD}" in toast.inner_text()
    assert page.evaluate("window.__xss") is None, "a name ran as HTML"
    assert page.locator(".choices img, .notyf img, .tabulator img").count() == 0


def test_markup_in_every_field_shows_as_text_on_every_page(app, page):
    """Names, descriptions, tags, class names, plugin docs, plugin errors, run names, run
    errors and CSV content are anyone's text on a shared server: none of it runs as HTML."""
    from helpers import drop_task_file, logged_run

    from activelab import keys

    mark = PAYLOAD
    drop_task_file("hostile.py", app.home / "tasks")  # the app's watched folder
    lab = lab_of(app)
    model = lab.create_model(
        f"m {mark}",
        dataset="hostile_digits",
        description=f"d {mark}",
        tags={"team": f"t {mark}"},
    )
    model.add_task("hostile_task")
    model.set_labels({0: 0, 1: 1, 2: 2})
    logged_run(lab, model, "0.001", 1.0)

    def visit(name: str, shown: list[str]) -> None:
        page.goto(f"{app.url}/?page={name}&model={model.id}")
        for text in shown:
            page.get_by_text(text, exact=False).first.wait_for()
        assert page.evaluate("window.__xss") is None, f"markup ran on the {name} page"
        assert page.locator("img[src='x']").count() == 0, f"markup became HTML on {name}"

    visit("home", [f"m {mark}", f"d {mark}", f"t {mark}"])
    visit("label", [f"c0 {mark}"])  # class names in the key picker
    visit("train", ["task-doc", "is not a plain name"])  # param docs are tooltips here
    visit("evaluate", [f"m {mark}"])
    visit("compare", [f"m {mark}"])
    visit("plugins", ["hostile_task", "is not a plain name"])
    visit("settings", [])

    # CSV content in an import error, on the label page
    visit("label", [f"c0 {mark}"])
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "hostile.csv", "mimeType": "text/csv",
                "buffer": f"3,1\n4,{mark}\n".encode()}]
    )  # fmt: skip
    page.get_by_text("Line 2: Label", exact=False).first.wait_for()
    # a run that starts and fails while the page is open: its name and error in a notification
    client = mlflow_client(lab)
    run = client.create_run(model.id, run_name=f"r {mark}", tags={keys.RUN_KIND: "train"})
    client.set_tag(run.info.run_id, keys.ERROR, f"boom {mark}")
    client.set_terminated(run.info.run_id, "FAILED")
    client.set_experiment_tag(model.id, keys.LATEST_RUN, run.info.run_id)
    client.set_experiment_tag(model.id, keys.LATEST_RUN_STATUS, "FAILED")
    page.locator(".notyf__message", has_text=f"boom {mark}").wait_for(timeout=30_000)
    assert page.evaluate("window.__xss") is None, "markup ran in an error or a notification"
    assert page.locator("img[src='x']").count() == 0
    assert model.labels.as_dict() == {0: 0, 1: 1, 2: 2}  # the bad CSV changed nothing


@pytest.mark.server
def test_the_app_shows_only_what_mlflow_lets_its_user_read_and_change(
    auth_server, tmp_path, page, unique, monkeypatch
):
    """The app runs as an MLflow user (MLflow's own env vars); another user's model stays
    hidden, and opening or labeling it says which permission to ask for."""
    name = f"alice-only {unique}"
    with auth_server.acting_as("alice"):
        model = Lab(auth_server.url).create_model(name)
        model.set_labels({0: 0})
    for variable, value in auth_server.credentials("bob").items():
        monkeypatch.setenv(variable, value)
    served = start_app(tmp_path / "bob", "--log-level", "info", tracking_uri=auth_server.url)
    try:
        page.goto(f"{served.url}/")
        page.get_by_text("Models").first.wait_for()
        page.goto(f"{served.url}/?page=label&model={model.id}")
        page.get_by_text("does not allow user 'bob' to read").first.wait_for()
        assert page.get_by_text(name).count() == 0

        auth_server.grant(model.id, "bob", "READ")
        page.goto(f"{served.url}/?page=label&model={model.id}")
        wait_for_map(page)
        x, y = page.evaluate(POINT_OF_SAMPLE, 42)
        page.mouse.click(x, y)
        page.get_by_text(re.compile(r"^1 selected —")).wait_for()
        page.keyboard.press("7")
        page.get_by_text("EDIT permission").first.wait_for()
    finally:
        served.stop()
    with auth_server.acting_as("alice"):
        assert Lab(auth_server.url).get_model(name).labels.as_dict() == {0: 0}
    closed = ("StreamClosedError", "WebSocketClosedError")  # the browser left mid-message
    assert [t for t in tracebacks(served.output()) if not any(c in t for c in closed)] == []


@pytest.mark.server
def test_two_people_on_two_apps_see_each_other_s_labels(mlflow_server, tmp_path, page, browser):
    """Two `activelab serve` processes on one tracking server (PostgreSQL behind it): a label
    given in one app reaches the other's map; labeling another model meanwhile interferes
    with nothing."""
    lab = Lab(tracking_uri=mlflow_server.url, home=tmp_path / "script")
    shared = lab.create_model(f"shared {tmp_path.name}")
    other = lab.create_model(f"other {tmp_path.name}")
    apps = [
        start_app(tmp_path / name, "--no-mlflow-ui", tracking_uri=mlflow_server.url)
        for name in ("ada", "bob")
    ]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        ada, bob = page, context.new_page()
        bob.set_default_timeout(TIMEOUT)
        for person, app in ((ada, apps[0]), (bob, apps[1])):
            person.goto(f"{app.url}/?page=label&model={shared.id}")
            wait_for_map(person)

        def count(model) -> int:
            return len(Lab(tracking_uri=mlflow_server.url).get_model(model.id).labels.as_dict())

        def label_one(person, model, sample: int, key: str) -> None:
            before = count(model)
            x, y = person.evaluate(POINT_OF_SAMPLE, sample)
            person.mouse.click(x, y)
            person.get_by_text(re.compile(r"^1 selected —")).wait_for()
            person.keyboard.press(key)
            wait_until(lambda: count(model) == before + 1, message="the label to be saved")

        label_one(ada, shared, 42, "7")
        (picked,) = lab.get_model(shared.id).labels.as_dict()  # the sample under her click
        wait_until(
            lambda: map_labels(bob)[picked] == 7, timeout=30, message="ada's label on bob's map"
        )
        bob.goto(f"{apps[1].url}/?page=label&model={other.id}")
        wait_for_map(bob)
        label_one(bob, other, 100, "3")
        label_one(ada, shared, 300, "1")
        shared_labels = Lab(tracking_uri=mlflow_server.url).get_model(shared.id).labels.as_dict()
        other_labels = Lab(tracking_uri=mlflow_server.url).get_model(other.id).labels.as_dict()
        assert sorted(shared_labels.values()) == [1, 7] and list(other_labels.values()) == [3]
    finally:
        context.close()
        for app in apps:
            app.stop()
    for app in apps:
        closed = ("StreamClosedError", "WebSocketClosedError")
        assert [t for t in tracebacks(app.output()) if not any(c in t for c in closed)] == []
