"""The app in headless Chromium: the newcomer's journey from an empty store to labels that
survive a reload, and deleting/restoring a model."""

from __future__ import annotations

import time

import pytest
from browser import ARGS, CHROMIUM, MAP_FRAME, MAP_LABELS, POINT_OF_SAMPLE, chromium_missing
from helpers import wait_until
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
def app(tmp_path):
    served = start_app(tmp_path / "home", "--no-mlflow-ui")
    yield served
    served.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


def lab_of(app) -> Lab:
    return Lab(tracking_uri=app.tracking_uri, home=app.home)


def map_labels(page) -> list[int]:
    return page.evaluate(MAP_LABELS)


def wait_for_map(page) -> None:
    page.get_by_text("Map from").wait_for()
    page.wait_for_function(
        "() => window.Bokeh && Bokeh.documents.length && "
        "Bokeh.documents[Bokeh.documents.length - 1].get_model_by_name('label-map')"
    )
    time.sleep(0.5)  # the first paint


def test_newcomer_journey(app, page):
    page.goto(app.url + "/")
    page.get_by_text("No models yet").wait_for()  # the empty state leads the way

    page.get_by_role("button", name="Create your first model").click()
    page.get_by_placeholder("model-001 if empty").fill("digits <demo>")
    page.get_by_role("button", name="Create", exact=True).click()
    page.get_by_text("digits <demo>").first.wait_for()  # escaped, shown as typed

    page.get_by_role("button", name="Open").click()
    wait_for_map(page)
    assert "page=label" in page.url and "model=" in page.url  # the model is in the URL
    model = lab_of(app).get_model("digits <demo>")

    # click a point, then press a key: the sample is labeled and saved
    x, y = page.evaluate(POINT_OF_SAMPLE, 42)
    page.mouse.click(x, y)
    page.get_by_text("Click a point").wait_for(state="hidden")
    page.keyboard.press("7")
    page.get_by_text("Saved:").wait_for()
    model.labels.refresh()
    labeled = model.labels.as_dict()
    assert 42 in labeled and labeled[42] == 7
    first_round = set(labeled)
    assert all(map_labels(page)[i] == 7 for i in first_round)  # patched in the browser

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
    browser_labels = map_labels(page)
    assert all(browser_labels[i] == 2 for i in lasso)

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


def test_navigation_keeps_the_model_and_placeholders_say_so(app, page):
    model = lab_of(app).create_model("navigated")
    page.goto(f"{app.url}/?page=label&model={model.id}")
    wait_for_map(page)
    page.get_by_role("button", name="Train").click()
    page.get_by_text("Train is not built yet").wait_for()
    assert "page=train" in page.url and f"model={model.id}" in page.url
    page.get_by_role("button", name="Settings").click()
    page.get_by_text("Tracking URI").wait_for()
    page.get_by_role("button", name="Label").click()
    wait_for_map(page)
    # the model came along: named in the header and chosen in the page's model picker
    page.locator(".al-header b", has_text="navigated").wait_for()
    assert page.get_by_role("combobox").first.input_value() == "navigated"


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
