"""Two people on two apps on one tracking server: how soon one person's label shows on the
other's map.

Target (issue "Team scale"): a label given in one `activelab serve` shows on the map of another
`activelab serve` on the same tracking server within 2 s. The server is run as a team runs it:
`mlflow server` on a throwaway PostgreSQL cluster with proxied artifacts. Timed: the key press
in one browser until the other browser's map data holds the label. Baseline in the same run: the
label page's poll period (the floor of a polling view). Also timed: the key press until the
labeling person's own map shows the label (the round trip).

With `--under-training`, the same is measured a second time while a third person's model
trains through the same tracking server (a real run, launched as `activelab train` would,
on this machine: the harder case, since a team's trainings run on other machines); each
`*_under_training` figure has its idle figure of the same run beside it.

    .venv/bin/python tests/bench/bench_team.py [--labels 20] [--under-training]

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

from browser import ARGS, CHROMIUM, PICK_SAMPLES  # noqa: E402
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
HAS_LABEL = """([i, label]) => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  return doc.get_model_by_name("label-state").data.label[i] === label;
}"""


def label_in_turn(ada, bob, samples, first_label: int) -> tuple[list[float], list[float]]:
    """Label `samples` in Ada's browser; seconds until Ada's map and until Bob's show each."""
    round_trips, propagations = [], []
    for n, sample in enumerate(int(s) for s in samples):
        ada.evaluate(PICK_SAMPLES, [sample])
        ada.get_by_text("1 selected —").wait_for()
        label = (first_label + n) % 10
        start = time.perf_counter()
        ada.keyboard.press(str(label))
        ada.wait_for_function(HAS_LABEL, arg=[sample, label], timeout=30_000, polling=10)
        round_trips.append(time.perf_counter() - start)
        bob.wait_for_function(HAS_LABEL, arg=[sample, label], timeout=30_000, polling=20)
        propagations.append(time.perf_counter() - start)
    return round_trips, propagations


def training_beside(server_url: str, home: Path):
    """A third person's training on the same tracking server, running until stopped."""
    carol = Lab(tracking_uri=server_url, home=home).create_model("carol")
    carol.set_labels({i: i % 10 for i in range(50)})
    handle = carol.launch(epochs=10_000, system_metrics=False)
    deadline = time.monotonic() + 300
    while (handle.progress or {}).get("run_steps", 0) < 5:  # training, not starting
        if handle.status not in ("RUNNING", "SCHEDULED") or time.monotonic() > deadline:
            raise RuntimeError(f"the training beside did not start: {handle.summary.error}")
        time.sleep(0.2)
    return handle


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--under-training", action="store_true")
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
            rounds = 2 if args.under_training else 1
            samples = np.random.default_rng(0).choice(size, args.labels * rounds, replace=False)
            round_trips, latencies = label_in_turn(ada, bob, samples[: args.labels], 0)
            if args.under_training:
                training = training_beside(server.url, root / "carol")
                try:
                    busy = label_in_turn(ada, bob, samples[args.labels :], 1)
                    steps_per_s = (training.progress or {}).get("samples_per_s")
                finally:
                    training.stop(wait=True, timeout=120)
            browser.close()
    finally:
        for app in apps:
            app.stop()
        server.stop()
        database.stop()
    figures = {
        "labels": len(latencies),
        "label_propagation_p50_s": round(statistics.median(latencies), 3),
        "label_propagation_p95_s": round(p95(latencies), 3),
        "label_propagation_max_s": round(max(latencies), 3),
        "poll_period_s": POLL_MS / 1000,
        "label_propagation_p95_vs_poll_ratio": round(p95(latencies) / (POLL_MS / 1000), 3),
        "label_round_trip_p95_ms": round(p95(round_trips) * 1000, 1),
    }
    if args.under_training:
        busy_trips, busy_latencies = busy
        figures.update({
            "label_propagation_p95_s_under_training": round(p95(busy_latencies), 3),
            "label_round_trip_p95_ms_under_training": round(p95(busy_trips) * 1000, 1),
            "label_round_trip_p95_under_training_vs_idle_ratio": round(
                p95(busy_trips) / p95(round_trips), 3
            ),
            "training_samples_per_s_beside": steps_per_s,
        })  # fmt: skip
    print(
        f"a label in one app on the other's map: p50 {figures['label_propagation_p50_s']} s, "
        f"p95 {figures['label_propagation_p95_s']} s (target <= 2 s; poll period "
        f"{figures['poll_period_s']} s); own map p95 {figures['label_round_trip_p95_ms']} ms"
    )
    if args.under_training:
        print(
            "with a third person's training beside: propagation p95 "
            f"{figures['label_propagation_p95_s_under_training']} s, own map p95 "
            f"{figures['label_round_trip_p95_ms_under_training']} ms (target <= 150 ms)"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
