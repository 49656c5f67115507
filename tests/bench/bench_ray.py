"""Time from a launch to its first metric in MLflow: on a Ray cluster against a local worker.

Issue "Team scale" asks for the time from `launch(backend="ray")` to the first metric. A real
local Ray head (2 CPUs, `ray start --head`, as the tests start it) and a real `mlflow server`
(sqlite behind it; the Ray worker logs through it as on a team's cluster); the same model and
settings launched with the `local` backend (a fresh worker process, no warm worker) are the
baseline. Measured: launch call returned -> the run's first `loss/total` point readable
through MLflow, per launch, `--repeats` times each, alternating.

    .venv/bin/python tests/bench/bench_ray.py [--repeats 3]

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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the Ray head helper the tests use
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ["ACTIVELAB_WARM_WORKER"] = "0"  # a fresh worker each time, as a Ray job has

SETTINGS = {"trainer.hidden_dims": "[32]", "trainer.log_model": "false"}


def first_metric_s(model, **launch) -> float:
    """Seconds from the launch to its first loss point in MLflow; the run is then stopped."""
    from mlflow import MlflowClient

    start = time.perf_counter()
    handle = model.launch(epochs=10_000, system_metrics=False, **launch)
    client = MlflowClient(model.lab.settings.tracking_uri)
    deadline = time.monotonic() + 300
    while not client.get_metric_history(handle.run_id, "loss/total"):
        if handle.status not in ("RUNNING", "SCHEDULED") or time.monotonic() > deadline:
            raise RuntimeError(f"no first metric: {handle.status} {handle.summary.error}")
        time.sleep(0.05)  # a polling interval: the figure's resolution
    elapsed = time.perf_counter() - start
    handle.stop(wait=True, timeout=120)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from ray_cluster import start_ray_head

    from activelab import Lab
    from activelab.mlflow_server import start_mlflow_server

    home = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    server = start_mlflow_server(
        f"sqlite:///{home / 'server.db'}",
        artifacts_destination=str(home / "artifacts"),
        log_path=home / "server.log",
    ).wait_ready()
    head = start_ray_head(home / "cluster")
    try:
        lab = Lab(tracking_uri=server.url, home=home / "lab")
        model = lab.create_model("bench-ray", config=SETTINGS)
        model.set_labels({i: str(i % 10) for i in range(50)})
        times: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(args.repeats):
            times["local"].append(first_metric_s(model))
            times["ray"].append(first_metric_s(model, backend="ray", address=head.url, cpus=1))
            print(f"first metric: local {times['local'][-1]:.2f} s, ray {times['ray'][-1]:.2f} s")
    finally:
        head.stop()
        server.stop()
    local, ray = (statistics.median(times[k]) for k in ("local", "ray"))
    print(json.dumps({
        "repeats": args.repeats,
        "launch_to_first_metric_local_s": round(local, 2),
        "launch_to_first_metric_ray_s": round(ray, 2),
        "ray_vs_local_ratio": round(ray / local, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
