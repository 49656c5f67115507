"""Label-write latency, bulk labeling and model listing, local and through `mlflow server`
(on sqlite, and on PostgreSQL as a team runs it).

Targets (issue "Models and labels on MLflow"): p95 single label <= 50 ms local and <= 150 ms
through the server (sqlite or PostgreSQL behind it); 1,000 labels at once <= 1 s;
listing 300 models <= 0.3 s local.
Each figure is compared, as a ratio, with the bare MLflow call it cannot avoid (a baseline
measured in the same run): one `set_experiment_tag` for a label write, one
`search_experiments` for the listing.

    .venv/bin/python tests/bench/bench_labels.py [--writes 200] [--models 300]

The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(fn, repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench_store(uri: str, home: Path, writes: int, tag: str) -> dict[str, float]:
    from mlflow import MlflowClient

    from activelab import Lab

    lab = Lab(tracking_uri=uri, home=home)
    model = lab.create_model(f"bench-{tag}-{os.getpid()}-{time.time_ns()}")
    model.set_label(0, 0)  # warm up: first listing, connection, lazy imports
    client = MlflowClient(uri)
    baseline = timed(lambda i: client.set_experiment_tag(model.id, "bench", str(i)), writes)
    single = timed(lambda i: model.set_label(1 + i, i % 10), writes)
    # 1,000 samples at once, a different class each time so every call changes all of them
    bulk = timed(lambda i: model.set_labels(range(i * 150, i * 150 + 1000), (i + 1) % 10), 5)
    figures = {
        f"label_write_p50_ms_{tag}": statistics.median(single),
        f"label_write_p95_ms_{tag}": percentile(single, 95),
        f"tag_write_p95_ms_{tag}": percentile(baseline, 95),
        f"label_write_p95_vs_tag_write_{tag}": percentile(single, 95) / percentile(baseline, 95),
        f"labels_1000_at_once_ms_{tag}": statistics.median(bulk),
    }
    start = time.perf_counter()
    fresh = Lab(tracking_uri=uri, home=home).get_model(model.id)
    count = fresh.labels.count
    figures[f"labels_cold_open_ms_{tag}"] = (time.perf_counter() - start) * 1000
    assert count > 0
    return figures


def bench_listing(uri: str, home: Path, models: int, tag: str) -> dict[str, float]:
    from mlflow import MlflowClient

    from activelab import Lab, keys

    lab = Lab(tracking_uri=uri, home=home)
    existing = len(lab.list_models())
    for i in range(existing, models):
        lab.create_model(f"list-{tag}-{i:04d}")
    client = MlflowClient(uri)
    lab.list_models()
    listing = timed(lambda i: lab.list_models(), 7)
    raw = timed(
        lambda i: client.search_experiments(
            filter_string=f"tags.`{keys.MODEL_MARKER}` = '1'", max_results=1000
        ),
        7,
    )
    assert len(lab.list_models()) >= models
    return {
        f"list_{models}_models_ms_{tag}": statistics.median(listing),
        f"list_{models}_models_vs_raw_search_{tag}": statistics.median(listing)
        / statistics.median(raw),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--models", type=int, default=300)
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/postgres.py
    from postgres import start_postgres

    from activelab.mlflow_server import start_mlflow_server

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp:
        root = Path(tmp)
        local_uri = f"sqlite:///{root / 'local.db'}"
        figures.update(bench_store(local_uri, root / "home", args.writes, "local"))
        figures.update(bench_listing(local_uri, root / "home", args.models, "local"))
        server = start_mlflow_server(
            f"sqlite:///{root / 'server.db'}",
            artifacts_destination=str(root / "served"),
            log_path=root / "server.log",
        ).wait_ready()
        try:
            figures.update(bench_store(server.url, root / "home", args.writes, "server"))
            figures.update(bench_listing(server.url, root / "home", args.models, "server"))
        finally:
            server.stop()
        # the team setup: the server's backend store on PostgreSQL, artifacts proxied
        database = start_postgres(root / "postgres")
        server = start_mlflow_server(
            database.uri, artifacts_destination=str(root / "served-pg"), log_path=root / "pg.log"
        )
        try:
            server.wait_ready(timeout=180)
            figures.update(bench_store(server.url, root / "home", args.writes, "postgres"))
            figures.update(bench_listing(server.url, root / "home", args.models, "postgres"))
        finally:
            server.stop()
            database.stop()

    targets = {
        "label_write_p95_ms_local": 50,
        "label_write_p95_ms_server": 150,
        "labels_1000_at_once_ms_local": 1000,
        "labels_1000_at_once_ms_server": 1000,
        "label_write_p95_ms_postgres": 150,
        "labels_1000_at_once_ms_postgres": 1000,
        f"list_{args.models}_models_ms_local": 300,
    }
    for key, value in figures.items():
        target = targets.get(key)
        verdict = (
            "" if target is None else ("  ok" if value <= target else f"  OVER target {target}")
        )
        print(f"{key:42s} {value:10.2f}{verdict}")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
