"""Two people on two apps on one tracking server: how soon one person's label shows on the
other's map.

Target (issue "Team scale"): a label given in one `activelab serve` shows on the map of another
`activelab serve` on the same tracking server within 2 s. The server is run as a team runs it:
`mlflow server` on a throwaway PostgreSQL cluster with proxied artifacts. Timed: the key press
in one browser until the other browser's map data holds the label. Baseline in the same run: the
label page's poll period (the floor of a polling view).

    .venv/bin/python tests/bench/bench_team.py [--labels 20]

The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: served.py, browser.py, postgres.py

from browser import ARGS, CHROMIUM  # noqa: E402
from postgres import start_postgres  # noqa: E402
from served import start_app  # noqa: E402

from activelab import Lab  # noqa: E402
from activelab.mlflow_server import start_mlflow_server  # noqa: E402
from activelab.panel_app.pages.label import POLL_MS  # noqa: E402

DRAWN = """() => {
  if (!window.Bokeh || !Bokeh.documents.length) return false;
  const plot = Bokeh.documents[Bokeh.documents.length - 1].get_model_by_name("label-map");
  const view = plot && Bokeh.index.find_one(plot);
  return Boolean(view && view.frame.bbox.width > 0 && view.has_finished());
}"""
SELECT = """(i) => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  doc.get_model_by_name("label-map").renderers[0].data_source.selected.indices = [i];
}"""
HAS_LABEL = """([i, label]) => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  return doc.get_model_by_name("label-map").renderers[0].data_source.data.label[i] === label;
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="bench-team-"))
    database = start_postgres(root / "postgres")
    server = start_mlflow_server(
        database.uri, artifacts_destination=str(root / "artifacts"), log_path=root / "server.log"
    ).wait_ready(timeout=180)
    apps = []
    try:
        model = Lab(tracking_uri=server.url, home=root / "script").create_model("shared")
        apps = [
            start_app(root / who, "--no-mlflow-ui", tracking_uri=server.url)
            for who in ("ada", "bob")
        ]
        url = f"?page=label&model={model.id}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            pages = []
            for app in apps:
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.goto(f"{app.url}/{url}")
                page.wait_for_function(DRAWN, timeout=120_000)
                pages.append(page)
            ada, bob = pages
            size = model.dataset_info.size
            samples = np.random.default_rng(0).choice(size, args.labels, replace=False)
            latencies = []
            for n, sample in enumerate(int(s) for s in samples):
                ada.evaluate(SELECT, sample)
                ada.get_by_text("1 selected —").wait_for()
                label = n % 10
                start = time.perf_counter()
                ada.keyboard.press(str(label))
                bob.wait_for_function(HAS_LABEL, arg=[sample, label], timeout=30_000, polling=20)
                latencies.append(time.perf_counter() - start)
            browser.close()
    finally:
        for app in apps:
            app.stop()
        server.stop()
        database.stop()
    p95 = float(np.percentile(latencies, 95))
    figures = {
        "labels": len(latencies),
        "label_propagation_p50_s": round(statistics.median(latencies), 3),
        "label_propagation_p95_s": round(p95, 3),
        "label_propagation_max_s": round(max(latencies), 3),
        "poll_period_s": POLL_MS / 1000,
        "label_propagation_p95_vs_poll_ratio": round(p95 / (POLL_MS / 1000), 3),
    }
    print(
        f"a label in one app on the other's map: p50 {figures['label_propagation_p50_s']} s, "
        f"p95 {figures['label_propagation_p95_s']} s (target <= 2 s; poll period "
        f"{figures['poll_period_s']} s)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
