"""Loading runs into the Compare page: 10 runs x 5 metrics x 10,000 steps.

Target (issue "Evaluate and compare"): <= 2 s, through a real `mlflow server` and on the local
store. Timed: finding the runs, one bulk downsampled read per metric, the param and figure
tables, and building the overlay plot. Baseline in the same run: reading every point with
`MlflowClient.get_metric_history`, one call per run and metric (the naive way).
`load_<store>_median_s` is the first look at the runs (none of their curves in memory);
`load_<store>_one_run_added_s` adds the 10th run to a page showing 9, and
`load_<store>_reopen_median_s` opens the page again (ended runs' curves come from memory).

    .venv/bin/python tests/bench/bench_compare.py [--runs 10] [--metrics 5] [--steps 10000]
                                                  [--under-training]

`--under-training` (issue "Label while it trains") times the loads again while a training run
of a 60,000-sample model runs beside on this machine (started by the benchmark, with the
trainer's default threads and priority): `load_<store>_median_s_under_training`, with the idle
figure of the same run as its baseline.

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
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from activelab import keys

HERE = Path(__file__).resolve().parent


def log_runs(lab, runs: int, metrics: int, steps: int) -> list[str]:
    from mlflow.entities import Metric, Param

    client = MlflowClient(lab.settings.tracking_uri)
    ids = []
    for number in range(runs):
        model = lab.create_model(f"bench-{number:02d}")
        run = client.create_run(model.id, run_name="long", tags={keys.RUN_KIND: "train"})
        run_id = run.info.run_id
        names = ["loss/total"] + [f"loss/task{i}" for i in range(metrics - 1)]
        start = run.info.start_time
        batch: list[Metric] = []
        for step in range(1, steps + 1):
            for n, name in enumerate(names):
                batch.append(Metric(name, (n + 1 + number) / step**0.5, start + step * 10, step))
            if len(batch) >= 995:
                client.log_batch(run_id, metrics=batch)
                batch = []
        client.log_batch(
            run_id, metrics=batch, params=[Param("trainer.lr", str(1e-3 / (number + 1)))]
        )
        client.set_terminated(run_id, "FINISHED")
        ids.append(run_id)
    return ids


def time_compare(
    lab, run_ids: list[str], metrics: list[str], repeats: int, cold: bool = True
) -> list[float]:
    """Seconds to open the Compare page on these runs; `cold`: none of their curves is in
    the app's memory yet (the first look at them), else all are (a reopen)."""
    from activelab.panel_app.context import AppContext
    from activelab.panel_app.pages.compare import ComparePage
    from activelab.panel_app.vm.state import AppState

    times = []
    for _ in range(repeats):
        if cold:
            lab.tracking.ended_histories.clear()
        page = ComparePage(AppState(AppContext(lab)))
        vm = page.vm
        start = time.perf_counter()
        vm.find_runs()
        vm.param.update(selected=list(run_ids), metrics=metrics)
        vm.load_curves()
        vm.params_table()
        vm.figures_table()
        page._draw()
        times.append(time.perf_counter() - start)
        assert len(vm.curves) == len(run_ids) * len(metrics)
    return times


def time_naive(lab, run_ids: list[str], metrics: list[str]) -> float:
    client = MlflowClient(lab.settings.tracking_uri)
    start = time.perf_counter()
    for run_id in run_ids:
        for metric in metrics:
            client.get_metric_history(run_id, metric)
    return time.perf_counter() - start


@contextmanager
def training_beside(home: Path):
    """A training run of a 60,000-sample model on this machine, training while the block runs."""
    sys.path.insert(0, str(HERE))
    from bench_app import DATASET_FILE

    from activelab import Lab

    tasks = home / "bench-tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "bench_dataset.py").write_text(DATASET_FILE.format(size=60000))
    lab = Lab(
        tracking_uri=f"sqlite:///{home / 'train.db'}", home=home / "train", tasks_dirs=[tasks]
    )
    model = lab.create_model(
        "large",
        dataset="bench-digits-large",
        config={
            "trainer.recon_images": "0",
            "trainer.encoder": "mlp",  # as measured before images got the conv network
            "tasks.consistency.enabled": "false",
        },
    )
    handle = model.launch(epochs=1000, system_metrics=False)
    deadline = time.monotonic() + 300
    while not json.loads(handle.run.data.tags.get(keys.PROGRESS) or "{}").get("run_steps"):
        if handle.status != "RUNNING" or time.monotonic() > deadline:
            raise RuntimeError(f"the training run did not start: {handle.summary.error}")
        time.sleep(0.5)
    try:
        yield handle
    finally:
        handle.stop(wait=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--under-training", action="store_true", help="Also time beside a run.")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from activelab import Lab
    from activelab.mlflow_server import start_mlflow_server

    home = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    metrics = ["loss/total"] + [f"loss/task{i}" for i in range(args.metrics - 1)]
    figures: dict[str, float] = {"runs": args.runs, "metrics": args.metrics, "steps": args.steps}
    server = start_mlflow_server(
        f"sqlite:///{home / 'server.db'}",
        artifacts_destination=str(home / "server-artifacts"),
        log_path=home / "server.log",
    ).wait_ready()
    try:
        stores = {
            "local": Lab(tracking_uri=f"sqlite:///{home / 'local.db'}", home=home / "local"),
            "server": Lab(tracking_uri=server.url, home=home / "remote"),
        }
        logged = {}
        for where, lab in stores.items():
            print(f"logging {args.runs} x {args.metrics} x {args.steps} points ({where})…")
            run_ids = logged[where] = log_runs(lab, args.runs, args.metrics, args.steps)
            loads = time_compare(lab, run_ids, metrics, args.repeats)
            naive = time_naive(lab, run_ids, metrics)
            figures[f"load_{where}_median_s"] = round(statistics.median(loads), 3)
            figures[f"load_{where}_naive_s"] = round(naive, 3)
            figures[f"load_{where}_vs_naive_ratio"] = round(statistics.median(loads) / naive, 4)
            # what the user waits for after the first look: a run added, a reopen
            time_compare(lab, run_ids[:-1], metrics, 1)
            added = time_compare(lab, run_ids, metrics, 1, cold=False)[0]
            reopen = time_compare(lab, run_ids, metrics, args.repeats, cold=False)
            figures[f"load_{where}_one_run_added_s"] = round(added, 3)
            figures[f"load_{where}_reopen_median_s"] = round(statistics.median(reopen), 3)
            print(f"compare load, {where}: {statistics.median(loads):.3f} s "
                  f"(naive full read {naive:.2f} s; target <= 2 s); one run added "
                  f"{added:.3f} s, reopen {statistics.median(reopen):.3f} s")  # fmt: skip
        if args.under_training:
            with training_beside(home):
                for where, lab in stores.items():
                    loads = time_compare(lab, logged[where], metrics, args.repeats)
                    figures[f"load_{where}_median_s_under_training"] = round(
                        statistics.median(loads), 3
                    )
                    print(f"compare load beside a training run, {where}: "
                          f"{statistics.median(loads):.3f} s (idle "
                          f"{figures[f'load_{where}_median_s']} s; target <= 2 s)")  # fmt: skip
    finally:
        server.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
