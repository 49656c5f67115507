"""Screenshots of every page of the app, on a desktop (1280x900) and a phone (390x844), with a
model that has labels, a finished run and an evaluation: what a reviewer looks at before and
after a change to the app.

    .venv/bin/python tests/screenshots.py [--out screenshots/]

Writes `<out>/<size>-<page>.png` (full pages) and prints the files it wrote.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from browser import ARGS, CHROMIUM  # noqa: E402
from helpers import FAST  # noqa: E402
from served import start_app  # noqa: E402

from activelab import Lab  # noqa: E402

SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
# (pages that scroll inside their own box, like Train, show what fits the window)
# each page, and a text that says it has drawn
PAGES = {
    "home": "Recent activity",
    "label": "Map from",
    "train": "Job history",
    "evaluate": "Checkpoint",
    "compare": "Runs to compare",
    "plugins": "Plugins",
    "settings": "Tracking URI",
}


def prepare(home: Path) -> str:
    """A model with 40 labels, a finished 3-epoch run and an evaluation of it."""
    lab = Lab(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home)
    model = lab.create_model(
        "digits-demo", description="screenshots", config=FAST, tags={"team": "vision"}
    )
    model.set_labels({i: i % 10 for i in range(40)})
    handle = model.launch(epochs=3, wait=True, system_metrics=False, in_process=True)
    assert handle.status == "FINISHED", handle.summary.error
    model.evaluate()
    return model.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="activelab-screens-")) / "home"
    model_id = prepare(home)
    args.out.mkdir(parents=True, exist_ok=True)
    app = start_app(home, "--no-mlflow-ui")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for size, (width, height) in SIZES.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                for name, ready in PAGES.items():
                    page.goto(f"{app.url}/?page={name}&model={model_id}")
                    page.get_by_text(ready).first.wait_for(timeout=60_000)
                    page.wait_for_timeout(1500)  # a picture, not a test: let plots settle
                    path = args.out / f"{size}-{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(path)
                page.close()
            browser.close()
    finally:
        app.stop()


if __name__ == "__main__":
    main()
