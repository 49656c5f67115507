"""Mixed precision (`trainer.precision=bf16`) against fp32: speed, and learning from few labels.

Issue "Team scale" asks for mixed precision "if it measurably helps". Both halves, in one run,
with fp32 of the same seed as the baseline:
- speed: one epoch of an MNIST-sized data set (60,000 28x28 images: digits upscaled and
  repeated) with the trainer's default tasks, at the network widths of the default preset
  ([256, 256]) and a wider one ([1024, 512]); the figure is the run's own `train_time_s`
  (first to last step), so data loading and the graph are not in it.
- learning: `digits` with 50 labels (5 per class, a 30 % test split never labeled), the
  default run length; accuracy on the test split, per seed.

    .venv/bin/python tests/bench/bench_precision.py [--seeds 3] [--samples 60000]

The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

WIDTHS = {"default": [256, 256], "wide": [1024, 512]}


def train(model, config: dict, epochs: int | None = None) -> tuple[str, float]:
    handle = model.launch(epochs=epochs, config=config, in_process=True, system_metrics=False)
    status = handle.wait(timeout=1800, poll=0.2)
    if status != "FINISHED":
        raise RuntimeError(f"run {handle.run_id} ended {status}: {handle.summary.error}")
    return handle.run_id, float(handle.metrics["train_time_s"])


def speed(lab, samples: int) -> dict[str, float]:
    from bench_training import make_data, register_bench_dataset

    images, truth = make_data(samples)
    register_bench_dataset(lab.plugins, images, truth)
    labels = {int(i): int(truth[i]) for i in range(0, samples, samples // 500)}
    figures = {}
    for name, widths in WIDTHS.items():
        seconds = {}
        for precision in ("fp32", "bf16"):
            model = lab.create_model(
                f"speed-{name}-{precision}",
                dataset="bench-digits28",
                config={
                    "trainer.hidden_dims": json.dumps(widths),
                    "trainer.recon_images": "0",
                    "trainer.encoder": "mlp",  # the widths measured are the MLP's
                    "tasks.consistency.enabled": "false",
                },
            )
            model.set_labels(labels)
            _, seconds[precision] = train(model, {"trainer.precision": precision}, epochs=1)
            print(f"{name} {widths} {precision}: one epoch in {seconds[precision]:.1f} s")
        figures[f"epoch_s_fp32_{name}"] = round(seconds["fp32"], 2)
        figures[f"epoch_s_bf16_{name}"] = round(seconds["bf16"], 2)
        figures[f"bf16_speedup_{name}"] = round(seconds["fp32"] / seconds["bf16"], 3)
    return figures


def learning(lab, seeds: int) -> dict[str, float]:
    from bench_learning import digits, score, split

    _images, truth = digits()
    accuracy: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for seed in range(seeds):
        pool, test = split(truth, seed)
        rng = np.random.default_rng(seed)
        labels = {
            int(i): int(c)
            for c in np.unique(truth)
            for i in rng.choice(pool[truth[pool] == c], 5, replace=False)
        }
        for precision in accuracy:
            model = lab.create_model(f"learn-{seed}-{precision}", config={"trainer.seed": seed})
            model.set_labels(labels)
            run_id, _ = train(model, {"trainer.precision": precision})
            accuracy[precision].append(
                score(model._predictions_frame(run_id)[1], truth, pool, test)[0]
            )
            print(f"seed {seed} {precision}: {accuracy[precision][-1]:.1f} % at 50 labels")
    fp32, bf16 = (statistics.mean(accuracy[p]) for p in ("fp32", "bf16"))
    return {
        "acc_50_fp32": round(fp32, 2),
        "acc_50_bf16": round(bf16, 2),
        "acc_50_bf16_minus_fp32_pts": round(bf16 - fp32, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=60000)
    args = parser.parse_args()
    from activelab.models import Lab

    home = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    lab = Lab(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home)
    figures: dict[str, float] = {"samples": args.samples, "seeds": args.seeds}
    figures.update(speed(lab, args.samples))
    figures.update(learning(lab, args.seeds))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
