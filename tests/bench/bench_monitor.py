"""The training monitor: how fast a long run's curves load, and how fresh a live run's are.

Targets (issue "Training from the app"): the monitor of a run with 10 tasks x 20,000 steps
loads in <= 2 s; a metric is drawn <= 2 s after it was logged. Baselines in the same run:
- load: reading every point with `MlflowClient.get_metric_history` (the naive way),
- freshness: the page's poll period (1 s), the floor of a polling monitor.

    .venv/bin/python tests/bench/bench_monitor.py [--tasks 10] [--steps 20000] [--under-training]

Loads are timed on the local store and through a real `mlflow server`; the page is opened in
headless Chromium against the served app. The last line printed is one JSON object.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: served.py, browser.py, helpers.py

from browser import ARGS, CHROMIUM  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from served import start_app  # noqa: E402

from activelab import keys  # noqa: E402

POLL_S = 1.0
LAST_STEP = """(key) => {
  if (!window.Bokeh || !Bokeh.documents.length) return -1;
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  // a redraw (new run, log scale) replaces the figure; the shown one has a view
  const plot = [...doc.all_models].find(
    (m) => m.name === "train-steps" && Bokeh.index.find_one(m) != null);
  if (!plot) return -1;
  const line = plot.renderers.find((r) => r.name === key);
  if (!line) return -1;
  const steps = line.data_source.data.step;
  return steps.length ? Number(steps[steps.length - 1]) : -1;
}"""


def log_long_run(lab, model_id: str, tasks: int, steps: int) -> str:
    """A finished run with `tasks` loss curves plus the total, `steps` points each."""
    from mlflow.entities import Metric

    client = MlflowClient(lab.settings.tracking_uri)
    run = client.create_run(model_id, run_name="long run", tags={keys.RUN_KIND: "train"})
    run_id = run.info.run_id
    names = [f"loss/task{i:02d}" for i in range(tasks)] + ["loss/total"]
    start = int(time.time() * 1000) - steps * 10
    batch: list[Metric] = []
    for step in range(1, steps + 1):
        for n, name in enumerate(names):
            batch.append(Metric(name, (n + 1) * 100.0 / step**0.5, start + step * 10, step))
        if len(batch) >= 990:
            client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def time_loads(lab, run_id: str, repeats: int) -> tuple[list[float], float, int]:
    """(monitor loads in s, one naive full read in s, points shown per curve)."""
    from activelab.panel_app.vm.monitor import RunMonitor

    loads, shown = [], 0
    for _ in range(repeats):
        monitor = RunMonitor(lab.tracking, run_id)
        start = time.perf_counter()
        monitor.load()
        loads.append(time.perf_counter() - start)
        shown = max(len(s) for s in monitor.curves.values())
    client = MlflowClient(lab.settings.tracking_uri)
    start = time.perf_counter()
    for key in client.get_run(run_id).data.metrics:
        client.get_metric_history(run_id, key)
    return loads, time.perf_counter() - start, shown


def time_page_open(browser, url: str, last_step: int, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url)
        page.wait_for_function(
            f"() => ({LAST_STEP})('loss/total') === {last_step}", timeout=60_000, polling="raf"
        )
        times.append(time.perf_counter() - start)
        context.close()
    return times


def time_freshness(browser, lab, model_id: str, url: str, count: int) -> list[float]:
    """A live run (as a script anywhere would log it): log one point, time until drawn."""
    from mlflow.entities import Metric

    client = MlflowClient(lab.settings.tracking_uri)
    now = int(time.time() * 1000)
    run = client.create_run(
        model_id,
        run_name="live run",
        tags={keys.RUN_KIND: "train", keys.HEARTBEAT: str(now)},
    )
    run_id = run.info.run_id
    client.log_param(run_id, "epochs", "1")
    client.log_batch(run_id, metrics=[Metric("loss/total", 5.0, now, 1)])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(f"() => ({LAST_STEP})('loss/total') === 1", timeout=60_000)
    delays = []
    for step in range(2, count + 2):
        time.sleep(0.37)  # not in phase with the page's poll
        client.set_tag(run_id, keys.HEARTBEAT, str(int(time.time() * 1000)))
        start = time.perf_counter()
        client.log_batch(
            run_id, metrics=[Metric("loss/total", 5.0 / step, int(time.time() * 1000), step)]
        )
        page.wait_for_function(
            f"() => ({LAST_STEP})('loss/total') >= {step}", timeout=30_000, polling="raf"
        )
        delays.append(time.perf_counter() - start)
    context.close()
    client.set_terminated(run_id, "FINISHED")
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fresh", type=int, default=15)
    parser.add_argument(
        "--under-training", action="store_true", help="Also time freshness beside a run."
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from playwright.sync_api import sync_playwright

    from activelab import Lab
    from activelab.mlflow_server import start_mlflow_server

    home = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    figures: dict[str, float] = {"tasks": args.tasks, "steps": args.steps}

    # --- through a real mlflow server -----------------------------------------------------
    server = start_mlflow_server(
        f"sqlite:///{home / 'server.db'}",
        artifacts_destination=str(home / "server-artifacts"),
        log_path=home / "server.log",
    ).wait_ready()
    try:
        remote = Lab(tracking_uri=server.url, home=home / "remote")
        model = remote.create_model("long-remote")
        print(f"logging {args.tasks + 1} x {args.steps} points through the server…", flush=True)
        run_id = log_long_run(remote, model.id, args.tasks, args.steps)
        loads, naive, shown = time_loads(remote, run_id, args.repeats)
        figures["load_server_median_s"] = round(statistics.median(loads), 3)
        figures["load_server_naive_s"] = round(naive, 3)
        figures["load_server_vs_naive_ratio"] = round(statistics.median(loads) / naive, 4)
    finally:
        server.stop()

    # --- local store, and the page in a browser ------------------------------------------------
    local = Lab(tracking_uri=f"sqlite:///{home / 'app' / 'mlflow.db'}", home=home / "app")
    model = local.create_model("long-local")
    print(f"logging {args.tasks + 1} x {args.steps} points into the local store…", flush=True)
    run_id = log_long_run(local, model.id, args.tasks, args.steps)
    loads, naive, shown = time_loads(local, run_id, args.repeats)
    figures["load_local_median_s"] = round(statistics.median(loads), 3)
    figures["load_local_naive_s"] = round(naive, 3)
    figures["load_local_vs_naive_ratio"] = round(statistics.median(loads) / naive, 4)
    figures["points_shown_per_curve"] = shown

    app = start_app(home / "app", "--no-mlflow-ui")
    try:
        url = f"{app.url}/?page=train&model={model.id}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            opens = time_page_open(browser, url, args.steps, args.repeats)
            delays = time_freshness(browser, local, model.id, url, args.fresh)
            if args.under_training:  # a 60,000-sample model trains on this machine meanwhile
                sys.path.insert(0, str(HERE))
                from bench_compare import training_beside

                with training_beside(home):
                    busy = time_freshness(browser, local, model.id, url, args.fresh)
                figures["fresh_p95_s_under_training"] = round(
                    sorted(busy)[int(0.95 * (len(busy) - 1))], 3
                )
            browser.close()
    finally:
        app.stop()
    figures["page_open_median_s"] = round(statistics.median(opens), 3)
    figures["fresh_p50_s"] = round(statistics.median(delays), 3)
    figures["fresh_p95_s"] = round(sorted(delays)[int(0.95 * (len(delays) - 1))], 3)
    figures["fresh_max_s"] = round(max(delays), 3)
    figures["fresh_p50_vs_poll_ratio"] = round(statistics.median(delays) / POLL_S, 3)

    print()
    print(f"monitor load, local:  {figures['load_local_median_s']:.3f} s "
          f"(naive full read {figures['load_local_naive_s']:.2f} s; target <= 2 s)")  # fmt: skip
    print(f"monitor load, server: {figures['load_server_median_s']:.3f} s "
          f"(naive full read {figures['load_server_naive_s']:.2f} s; target <= 2 s)")  # fmt: skip
    print(f"page open to curves drawn: {figures['page_open_median_s']:.2f} s")
    print(f"freshness logged -> drawn: p50 {figures['fresh_p50_s']:.2f} s, "
          f"p95 {figures['fresh_p95_s']:.2f} s (target <= 2 s)")  # fmt: skip
    if args.under_training:
        print(f"freshness beside a training run: p95 "
              f"{figures['fresh_p95_s_under_training']:.2f} s (idle "
              f"{figures['fresh_p95_s']:.2f} s; target <= 2 s)")  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
