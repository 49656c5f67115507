"""Opening the Label page of a 60,000-sample model, and the label -> plot update.

Targets (issue "The Panel app"): the page is drawn <= 3 s after navigation; a label change is
saved and the plot patched <= 50 ms on the server. Baselines measured in the same run:
- open: a bare Panel page holding only a plain Bokeh scatter of the same 60,000 points,
- label: the durable label write alone (`LabelStore.set`), without the plot update.

    .venv/bin/python tests/bench/bench_app.py [--samples 60000] [--labels 30] [--under-training]

`--under-training` (issue "Label while it trains") measures the same again while a training run
of the same 60,000-sample model runs beside the app on this machine (started by the benchmark,
with the trainer's default threads and priority), in a freshly started app so the first open is
cold again; each `_under_training` figure has the idle one of the same run as its baseline. It
also prints the training run's own pace while the app is in use against its pace with the app
idle (started up, no browser): the mean of 20 s before and 20 s after the use. "In use" is
measured twice, each with where the two cores went meanwhile:
- at a person's pace (a page open, then a label a second): `training_pace_ratio_person_pace`;
- as fast as a browser can go (four page opens in new browser contexts, then 30 labels back to
  back): `training_pace_ratio_app_in_use`.
The issue's target for both: the run no more than 15 % below its idle pace (>= 0.85). It
holds at a person's pace. The fast pass keeps the browser busy back to back, so it wants more
than the core the trainer leaves (measured with no run beside it, in the idle part of the same
benchmark: `fast_pass_cores_browser_alone` + `fast_pass_cores_app_alone`, about 1.3 cores; a
cold page open costs Chromium ~1.7 CPU-s, Bokeh and Panel starting), and the worker, at a lower
priority by design, yields it. `training_pace_ratio_app_in_use_ceiling` is the most of its
idle pace the run could keep there without slowing the browser: the cores the pass leaves free,
over the cores the run's idle pace takes (generous: the benchmark's own processes and the
cold-started app's first open are not counted). On 2 cores it is below 0.85, so no priority
setting meets the target in the fast pass (0.79 with the worker at the app's own priority,
`ACTIVELAB_WORKER_NICE=0`, the browser slower). Which use the target means is open with the team.

The app runs for real (`activelab serve`) and is driven by headless Chromium. The last line
printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: served.py, browser.py, helpers.py

from browser import ARGS, CHROMIUM, PICK_SAMPLES  # noqa: E402
from served import start_app  # noqa: E402

DATASET_FILE = textwrap.dedent('''
    """A 60,000-sample, MNIST-sized data set for the app benchmark (digits, upscaled, tiled)."""
    import numpy as np
    from activelab import DataBundle, Dataset, DatasetInfo
    from activelab.tasks.datasets import Digits

    SIZE = {size}

    class BenchDigits(Dataset):
        kind = "bench-digits-large"

        def info(self):
            return DatasetInfo(self.kind, SIZE, tuple("0123456789"), (1, 28, 28), True)

        def load(self, progress=None):
            bundle = Digits().load()
            images = np.kron(bundle.images, np.ones((1, 1, 3, 3), dtype=np.float32))
            images = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
            reps = -(-SIZE // len(images))
            return DataBundle(np.tile(images, (reps, 1, 1, 1))[:SIZE].copy(),
                              np.tile(bundle.true_labels, reps)[:SIZE].copy(), self.info())
''')

DRAWN = """(n) => {
  if (!window.Bokeh || !Bokeh.documents.length) return false;
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  const plot = doc.get_model_by_name("label-map") || doc.get_model_by_name("baseline-map");
  if (!plot) return false;
  const view = Bokeh.index.find_one(plot);
  return view != null && view.has_finished() &&
         (doc.get_model_by_name("label-samples") || plot.renderers[0]).data_source
           .get_length() === n;
}"""

MAP_LABEL = """(i) => {
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  return doc.get_model_by_name("label-state").data.label[i];
}"""


def prepare(home: Path, samples: int) -> tuple[str, Path]:
    """A trained model on the large data set (its run logs the predictions the map shows)."""
    from activelab import Lab

    tasks = home / "bench-tasks"
    tasks.mkdir(parents=True)
    (tasks / "bench_dataset.py").write_text(DATASET_FILE.format(size=samples))
    lab = Lab(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home, tasks_dirs=[tasks])
    model = lab.create_model(
        "large",
        dataset="bench-digits-large",
        config={
            "trainer.hidden_dims": "[64]",
            # the MLP this benchmark has always measured (28x28 images would get the conv
            # network and consistency by default)
            "trainer.encoder": "mlp",
            "tasks.consistency.enabled": "false",
            "trainer.batch_size": "1024",
            "trainer.recon_images": "0",
        },
    )
    handle = model.launch(epochs=1, wait=True, system_metrics=False)
    assert handle.status == "FINISHED", handle.summary.error
    return model.id, tasks


def serve_baseline(images_xy: tuple[np.ndarray, np.ndarray]) -> tuple[str, object]:
    """A bare Panel page with a plain Bokeh scatter of the same points."""
    import panel as pn
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    from activelab.mlflow_server import free_port

    x, y = images_xy

    def page():
        source = ColumnDataSource({"x": x, "y": y, "c": np.zeros(len(x), np.int8)})
        plot = figure(
            sizing_mode="stretch_both", min_height=440, name="baseline-map", output_backend="canvas"
        )
        plot.scatter("x", "y", source=source, size=5, line_color=None)
        return pn.pane.Bokeh(plot, sizing_mode="stretch_both", min_height=440)

    port = free_port()
    server = pn.serve(
        {"/": page}, port=port, address="127.0.0.1", show=False, threaded=True, start=True
    )
    time.sleep(1)
    return f"http://127.0.0.1:{port}/", server


def time_open(browser, url: str, samples: int, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url)
        page.wait_for_function(DRAWN, arg=samples, timeout=60_000, polling="raf")
        times.append(time.perf_counter() - start)
        context.close()
    return times


def time_labels(
    browser, url: str, samples: int, count: int, seed: int = 0, cycle_s: float | None = None
) -> list[float]:
    """Browser round trips: key press -> the point's label changed in the browser's data.
    Each `seed` picks other samples (a label a sample already has changes nothing).
    `cycle_s`: label at a person's pace, one sample every `cycle_s` seconds (else at once)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(DRAWN, arg=samples, timeout=60_000)
    rng = np.random.default_rng(seed)
    round_trips = []
    for n in range(count):
        cycle_started = time.perf_counter()
        index = int(rng.integers(samples))
        page.evaluate(PICK_SAMPLES, [index])
        # the selection reached the server: the side panel shows the sample
        page.locator(".al-kv", has_text=re.compile(rf"sample\s*{index}(?!\d)")).wait_for()
        label = n % 10
        start = time.perf_counter()
        page.keyboard.press(str(label))
        page.wait_for_function(
            f"(i) => ({MAP_LABEL})(i) === {label}", arg=index, timeout=10_000, polling="raf"
        )
        round_trips.append((time.perf_counter() - start) * 1000)
        if cycle_s is not None:  # the person looks at the next sample (modelled, not awaited)
            time.sleep(max(0.0, cycle_started + cycle_s - time.perf_counter()))
    context.close()
    return round_trips


def store_write_baseline(home: Path, tasks: Path, model_id: str, count: int) -> list[float]:
    from activelab import Lab

    lab = Lab(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home, tasks_dirs=[tasks])
    store = lab.get_model(model_id).labels
    times = []
    for n in range(count):
        start = time.perf_counter()
        store.set(store.info.size - 1 - n, n % 10)
        times.append((time.perf_counter() - start) * 1000)
    return times


def server_label_ms(app) -> list[float]:
    pattern = r"label change: 1 sample\(s\) labeled in ([\d.]+) ms"
    return [float(m) for m in re.findall(pattern, app.output())]


def training_pace(run_steps, seconds: float, trainer) -> tuple[float, float]:
    """Steps per second of the training run over the next `seconds`, and the cores its
    process used meanwhile."""
    start_steps, start, cpu = run_steps(), time.perf_counter(), cpu_seconds([trainer])
    time.sleep(seconds)  # a rate over a window of wall time is what is measured
    elapsed = time.perf_counter() - start
    return (run_steps() - start_steps) / elapsed, (cpu_seconds([trainer]) - cpu) / elapsed


# A person labeling: one sample a second (look at it, press its key). The benchmark's other
# pass labels as fast as the browser answers, after four page opens in a row.
PERSON_CYCLE_S = 1.0


def cpu_seconds(processes) -> float:
    """CPU time of `processes` and of their ended children (a closed browser tab's renderer
    is counted by the process that reaped it)."""
    total = 0.0
    for process in processes:
        try:
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def browser_processes() -> list:
    return [p for p in psutil.process_iter(["name"]) if "chrom" in (p.info["name"] or "")]


def cores_during(use, app_process, trainer=None) -> tuple[object, float, dict[str, float]]:
    """`use()`'s result, its seconds, and the cores each side used meanwhile: the training
    run's process (if any), the browser's (a tab's renderer started meanwhile counted whole),
    the app's, and the machine's idle cores."""
    browser_before = browser_processes()
    groups = {
        "trainer": [trainer] if trainer else [],
        "browser": browser_before,
        "app": [app_process],
    }
    cpu_before = {side: cpu_seconds(group) for side, group in groups.items()}
    idle_before = psutil.cpu_times().idle
    started = time.perf_counter()
    result = use()
    seconds = time.perf_counter() - started
    known = {process.pid for process in browser_before}
    groups["browser"] = browser_before + [p for p in browser_processes() if p.pid not in known]
    cores = {
        side: (cpu_seconds(group) - cpu_before[side]) / seconds for side, group in groups.items()
    }
    cores["idle"] = (psutil.cpu_times().idle - idle_before) / seconds
    return result, seconds, cores


def fast_pass(browser, url: str, args, seed: int) -> tuple[list[float], list[float]]:
    """The app used as fast as a browser goes: `args.opens` page opens in new browser contexts,
    then `args.labels` labels back to back (open times, label round trips)."""
    opens = time_open(browser, url, args.samples, args.opens)
    return opens, time_labels(browser, url, args.samples, args.labels, seed=seed)


def wait_for_app_start_up(app, timeout: float = 120) -> None:
    """Until the freshly started app has preloaded and its warm worker is ready: before
    that, its start-up (torch imported twice) competes with the run, and is not idleness."""
    deadline = time.monotonic() + timeout
    while not all(line in app.output() for line in ("App preload done", "Warm worker ready")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app did not finish starting in {timeout} s:\n{app.output()}")
        time.sleep(0.2)


def measure_under_training(home: Path, tasks: Path, model_id: str, args) -> dict:
    """Open and label again while the model trains beside a freshly started app."""
    from playwright.sync_api import sync_playwright

    from activelab import Lab, keys

    lab = Lab(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home, tasks_dirs=[tasks])
    handle = lab.get_model(model_id).launch(epochs=1000, system_metrics=False)

    def run_steps() -> int:
        raw = handle.run.data.tags.get(keys.PROGRESS)
        return int(json.loads(raw).get("run_steps", 0)) if raw else 0

    deadline = time.monotonic() + 300
    while run_steps() < 20:  # the worker has loaded the data and is training
        if handle.status != "RUNNING" or time.monotonic() > deadline:
            raise RuntimeError(f"the training run did not start: {handle.summary.error}")
        time.sleep(0.5)
    app = start_app(home, "--no-mlflow-ui", "--log-level", "info")
    try:
        wait_for_app_start_up(app)
        trainer = psutil.Process(int(handle.run.data.tags[keys.PID]))
        pace_alone_before, cores_alone_before = training_pace(run_steps, 20, trainer)
        url = f"{app.url}/?page=label&model={model_id}"
        app_process = psutil.Process(app.process.pid)

        def in_use(use):
            """`use()`'s result, the run's pace meanwhile, and where the cores went."""
            steps_before = run_steps()
            result, seconds, cores = cores_during(use, app_process, trainer)
            return result, (run_steps() - steps_before) / seconds, cores

        def at_once():
            return fast_pass(browser, url, args, seed=2)

        def at_a_persons_pace():
            return time_labels(
                browser, url, args.samples, args.labels, seed=3, cycle_s=PERSON_CYCLE_S
            )

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                (opens, round_trips), pace_beside_app, cores = in_use(at_once)
                server_ms = server_label_ms(app)
                person_round_trips, pace_beside_person, person_cores = in_use(at_a_persons_pace)
            finally:
                browser.close()
        # the browser closed, the app idle
        pace_alone_after, cores_alone_after = training_pace(run_steps, 20, trainer)
    finally:
        app.stop()
        handle.stop(wait=True, timeout=300)
    # the idle pace before and after the app's use: a training run's pace drifts (its epochs
    # end in evaluations and checkpoints), so one 20 s window alone is a noisy baseline
    pace_alone = (pace_alone_before + pace_alone_after) / 2
    return {
        "open_first_s_under_training": round(opens[0], 3),
        "open_warm_median_s_under_training": round(statistics.median(opens[1:] or opens), 3),
        "label_server_p50_ms_under_training": round(statistics.median(server_ms), 2),
        "label_server_p95_ms_under_training": round(float(np.percentile(server_ms, 95)), 2),
        "label_browser_round_trip_p95_ms_under_training": round(
            float(np.percentile(round_trips, 95)), 1
        ),
        "training_steps_per_s_app_idle": round(pace_alone, 2),
        "training_steps_per_s_app_idle_before": round(pace_alone_before, 2),
        "training_steps_per_s_app_idle_after": round(pace_alone_after, 2),
        "training_steps_per_s_app_in_use": round(pace_beside_app, 2),
        "training_pace_ratio_app_in_use": round(pace_beside_app / pace_alone, 3),
        "idle_cores_trainer": round((cores_alone_before + cores_alone_after) / 2, 2),
        "in_use_cores_trainer": round(cores["trainer"], 2),
        "in_use_cores_browser": round(cores["browser"], 2),
        "in_use_cores_app": round(cores["app"], 2),
        "in_use_cores_idle": round(cores["idle"], 2),
        "training_steps_per_s_person_pace": round(pace_beside_person, 2),
        "training_pace_ratio_person_pace": round(pace_beside_person / pace_alone, 3),
        "label_browser_round_trip_p95_ms_person_pace": round(
            float(np.percentile(person_round_trips, 95)), 1
        ),
        "person_pace_cores_trainer": round(person_cores["trainer"], 2),
        "person_pace_cores_browser": round(person_cores["browser"], 2),
        "person_pace_cores_app": round(person_cores["app"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--labels", type=int, default=30)
    parser.add_argument("--opens", type=int, default=4)
    parser.add_argument("--under-training", action="store_true", help="Also measure beside a run.")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="bench-app-"))
    # the benchmark's own set-up run leaves no warm worker importing during the measurements
    # (the app starts its own, as it always does)
    os.environ["ACTIVELAB_WARM_WORKER"] = "0"
    model_id, tasks = prepare(home, args.samples)
    del os.environ["ACTIVELAB_WARM_WORKER"]
    os.environ["ACTIVELAB_TASKS_DIRS"] = str(tasks)
    app = start_app(home, "--no-mlflow-ui", "--log-level", "info")
    try:
        url = f"{app.url}/?page=label&model={model_id}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            opens = time_open(browser, url, args.samples, args.opens)
            rng = np.random.default_rng(1)
            baseline_url, _server = serve_baseline(
                (
                    rng.standard_normal(args.samples).astype(np.float32),
                    rng.standard_normal(args.samples).astype(np.float32),
                )
            )
            baseline_opens = time_open(browser, baseline_url, args.samples, args.opens)
            try:
                round_trips = time_labels(browser, url, args.samples, args.labels)
                if args.under_training:  # what the fast pass asks of the machine, no run beside
                    app_process = psutil.Process(app.process.pid)
                    _, _, fast_pass_cores = cores_during(
                        lambda: fast_pass(browser, url, args, seed=4), app_process
                    )
            except Exception:
                print(app.output()[-4000:])
                raise
            finally:
                browser.close()
                _server.stop()
                _server.join(10)
        if os.environ.get("BENCH_DEBUG"):
            print(app.output()[-4000:])
        server_ms = server_label_ms(app)
    finally:
        app.stop()
    writes = store_write_baseline(home, tasks, model_id, args.labels)
    warm = opens[1:] or opens
    figures = {
        "samples": args.samples,
        "open_first_s": round(opens[0], 3),
        "open_warm_median_s": round(statistics.median(warm), 3),
        "open_baseline_median_s": round(statistics.median(baseline_opens), 3),
        "open_vs_plain_bokeh_ratio": round(
            statistics.median(warm) / statistics.median(baseline_opens), 3
        ),
        "label_server_p50_ms": round(statistics.median(server_ms), 2),
        "label_server_p95_ms": round(float(np.percentile(server_ms, 95)), 2),
        "label_store_write_p50_ms": round(statistics.median(writes), 2),
        "label_server_vs_store_write_ratio": round(
            statistics.median(server_ms) / statistics.median(writes), 3
        ),
        "label_browser_round_trip_p50_ms": round(statistics.median(round_trips), 1),
        "label_browser_round_trip_p95_ms": round(float(np.percentile(round_trips, 95)), 1),
        "labels_measured": len(server_ms),
    }
    print(
        f"open: first {figures['open_first_s']} s, warm {figures['open_warm_median_s']} s "
        f"(target <= 3 s; plain Bokeh page {figures['open_baseline_median_s']} s)"
    )
    print(
        f"label -> plot update on the server: p50 {figures['label_server_p50_ms']} ms, p95 "
        f"{figures['label_server_p95_ms']} ms (target <= 50 ms; the durable write alone "
        f"{figures['label_store_write_p50_ms']} ms); browser round trip "
        f"{figures['label_browser_round_trip_p50_ms']} ms"
    )
    if args.under_training:
        figures.update(measure_under_training(home, tasks, model_id, args))
        # The most of its idle pace the run can keep beside the fast pass without slowing the
        # browser: the cores the pass leaves free when nothing trains, over the cores the run's
        # idle pace takes.
        person_side = fast_pass_cores["browser"] + fast_pass_cores["app"]
        figures["fast_pass_cores_browser_alone"] = round(fast_pass_cores["browser"], 2)
        figures["fast_pass_cores_app_alone"] = round(fast_pass_cores["app"], 2)
        figures["training_pace_ratio_app_in_use_ceiling"] = round(
            (psutil.cpu_count() - person_side) / figures["idle_cores_trainer"], 3
        )
        print(
            f"under training: open first {figures['open_first_s_under_training']} s (idle "
            f"{figures['open_first_s']} s); label on the server p95 "
            f"{figures['label_server_p95_ms_under_training']} ms (idle "
            f"{figures['label_server_p95_ms']} ms); browser round trip p95 "
            f"{figures['label_browser_round_trip_p95_ms_under_training']} ms; training pace "
            f"x{figures['training_pace_ratio_person_pace']} at a person's pace, "
            f"x{figures['training_pace_ratio_app_in_use']} while the app is in use as fast as "
            "a browser goes (target >= 0.85 for both; at most "
            f"x{figures['training_pace_ratio_app_in_use_ceiling']} there without slowing the "
            "browser, on this machine's cores)"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
