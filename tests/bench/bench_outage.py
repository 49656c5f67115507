"""A long tracking-server outage in the middle of a training run: nothing is lost, and
training does not stall while the server is gone.

Target (issue "Runs that never lie"): an outage of 10 minutes loses nothing — every step's
losses and every checkpoint reach MLflow once the server is back — and training goes on at
its own pace meanwhile. Baseline in the same run: the run's steps per second in the minute
before the outage; the figure is the ratio of the pace during the outage to it.

    .venv/bin/python tests/bench/bench_outage.py [--minutes 10]

The server is a real `mlflow server` killed with SIGKILL and started again on the same port;
the run is a real worker process. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: helpers.py

from helpers import FAST, KillableServer, wait_until  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from activelab import Lab, keys  # noqa: E402
from activelab.outbox import Spool, outbox_root  # noqa: E402

BEFORE_S = 60.0


def steps_per_s(history: list, start_ms: int, end_ms: int) -> float:
    steps = [m.step for m in history if start_ms <= m.timestamp < end_ms]
    return (max(steps) - min(steps)) / ((end_ms - start_ms) / 1000) if len(steps) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="How long the server is down.")
    args = parser.parse_args()
    outage_s = args.minutes * 60
    root = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    os.environ.update({"ACTIVELAB_HOME": str(root / "home"), "ACTIVELAB_WARM_WORKER": "0"})
    server = KillableServer(root / "server").start()
    try:
        lab = Lab(tracking_uri=server.url, home=root / "home")
        model = lab.create_model("outage", config={**FAST, "trainer.checkpoint_every": "20"})
        model.set_labels({i: str(i % 10) for i in range(50)})
        handle = model.launch(epochs=1_000_000)
        wait_until(
            lambda: handle.run.data.tags.get(keys.LAST_CHECKPOINT), 180, message="a checkpoint"
        )
        before_from = int(time.time() * 1000)
        print(f"training; measuring the pace for {BEFORE_S:.0f} s", file=sys.stderr)
        wait_until(lambda: time.time() * 1000 - before_from >= BEFORE_S * 1000, BEFORE_S + 5,
                   interval=1, message="the pace before the outage")  # fmt: skip
        down_from = int(time.time() * 1000)
        server.kill()
        spool = Spool(outbox_root(lab.settings.home) / handle.run_id)
        print(f"server killed; down for {outage_s:.0f} s", file=sys.stderr)
        wait_until(lambda: time.time() * 1000 - down_from >= outage_s * 1000, outage_s + 5,
                   interval=5, message="the end of the outage")  # fmt: skip
        down_to = int(time.time() * 1000)
        backlog = spool.pending()
        backlog_items = len(backlog)
        spooled_checkpoints = sum(e["kind"] == "artifact" for e in backlog)
        server.start()
        back_at = time.monotonic()
        print(f"server back; delivering {backlog_items} item(s)", file=sys.stderr)
        last = backlog[-1]["seq"] if backlog else 0
        wait_until(lambda: spool.delivered() >= last, 600, interval=1, message="the backlog")
        delivery_s = time.monotonic() - back_at
        status = handle.stop(wait=True, timeout=300)

        client = MlflowClient(lab.settings.tracking_uri)
        history = client.get_metric_history(handle.run_id, "loss/total")
        steps = sorted({m.step for m in history})
        missing_steps = len(set(range(steps[0], steps[-1] + 1)) - set(steps))
        epochs = sorted(
            int(Path(p).stem.split("-")[1])
            for p in model.checkpoints(handle.run_id)
            if Path(p).name.startswith("epoch-")
        )
        every = 20
        missing_checkpoints = len(set(range(every, epochs[-1] + 1, every)) - set(epochs))
        pace_before = steps_per_s(history, before_from, down_from)
        pace_during = steps_per_s(history, down_from, down_to)
        figures = {
            "outage_s": round(outage_s),
            "steps_per_s_before": round(pace_before, 1),
            "steps_per_s_during_outage": round(pace_during, 1),
            "pace_ratio_during_outage": round(pace_during / pace_before, 3)
            if pace_before
            else None,
            "spooled_items": backlog_items,
            "spooled_checkpoints": spooled_checkpoints,
            "backlog_delivery_s": round(delivery_s, 1),
            "missing_steps": missing_steps,
            "missing_checkpoints": missing_checkpoints,
            "status_after_stop": status,
        }
    finally:
        server.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
