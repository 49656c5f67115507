"""Screenshots of every page of the app, on a desktop (1280x900) and a phone (390x844,
emulated: mobile, touch, device scale 2), with a model that has labels, a finished run and an
evaluation: what a reviewer looks at before and after a change to the app.

    .venv/bin/python tests/screenshots.py [--out screenshots/]

Writes `<out>/<size>-<page>.png` (full pages) and prints the files it wrote. `--hard` also
writes `<size>-label-hard.png`: the Label page of a model of digits with real variation
(rotated, scaled, noisy; `bench/hard_digits.py`) after the labeling loop reached 50 labels
(10 to start, +10 a round picked by `auto`, each round continuing the last): the islands the
map should show (a few minutes of training).
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
# the phone as a phone's browser: mobile layout (the viewport tag honoured), touch, a 2x screen
PHONE = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}
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


def prepare_hard(home: Path) -> str:
    """A hard-digits model labeled by the loop to 50 labels, as a person would with `auto`."""
    import numpy as np
    from bench.hard_digits import folder_sources, write_folder

    folder = home.parent / "hard-digits"
    write_folder(folder, variants=3)
    _sources, truth = folder_sources(folder)
    lab = Lab(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home)
    model = lab.create_model(
        "hard-digits", dataset="image-folder", config={"dataset.path": str(folder)}
    )
    rng = np.random.default_rng(0)
    model.set_labels({int(rng.choice(np.flatnonzero(truth == c))): int(c) for c in range(10)})
    run = None
    for round_number in range(5):
        if round_number:
            model.set_labels({i: int(truth[i]) for i in model.next_to_label(10, run=run)})
        handle = model.launch(resume_from=run, wait=True, system_metrics=False)
        assert handle.status == "FINISHED", handle.summary.error
        run = handle.run_id
    return model.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--hard", action="store_true", help="also a hard-digits Label page")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="activelab-screens-")) / "home"
    model_id = prepare(home)
    hard_id = prepare_hard(home) if args.hard else None
    args.out.mkdir(parents=True, exist_ok=True)
    app = start_app(home, "--no-mlflow-ui")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for size, (width, height) in SIZES.items():
                # the phone as a phone's browser: mobile layout, touch, a 2x screen
                emulated = PHONE if size == "phone" else {}
                page = browser.new_page(viewport={"width": width, "height": height}, **emulated)
                for name, ready in PAGES.items():
                    page.goto(f"{app.url}/?page={name}&model={model_id}")
                    page.get_by_text(ready).first.wait_for(timeout=60_000)
                    page.wait_for_timeout(1500)  # a picture, not a test: let plots settle
                    path = args.out / f"{size}-{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(path)
                if hard_id is not None:
                    page.goto(f"{app.url}/?page=label&model={hard_id}")
                    page.get_by_text(PAGES["label"]).first.wait_for(timeout=60_000)
                    page.wait_for_timeout(1500)
                    path = args.out / f"{size}-label-hard.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(path)
                page.close()
            browser.close()
    finally:
        app.stop()


if __name__ == "__main__":
    main()
