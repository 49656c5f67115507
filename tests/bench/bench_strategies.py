"""Time for "Next to label" at MNIST size: every query strategy picking 10 and 1,000 of
60,000 samples (500 labeled, a 2-D latent), against least confidence as the baseline.

No target is set by an issue; what a person feels is the Label page's N key, so the figure to
watch is the 10-pick time of each strategy (well under a second keeps the page responsive).

    .venv/bin/python tests/bench/bench_strategies.py [--samples 60000] [--repeats 5]

The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from activelab.plugins import get_plugins

    host = get_plugins()
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(args.samples, 2))
    probabilities = rng.dirichlet(np.ones(10), size=args.samples)
    labeled = np.zeros(args.samples, dtype=bool)
    labeled[rng.choice(args.samples, 500, replace=False)] = True

    def median_ms(kind: str, count: int) -> float:
        strategy = host.get("strategies", kind)()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            strategy.select(probabilities, labeled, count, seed=0, latent=latent)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    figures: dict[str, float] = {}
    for count in (10, 1000):
        baseline = median_ms("least_confidence", count)
        for kind in sorted(host.registry("strategies")):
            took = median_ms(kind, count)
            figures[f"{kind}_{count}_ms"] = round(took, 2)
            figures[f"{kind}_{count}_vs_least_confidence"] = round(took / baseline, 2)
            print(f"{kind:>18} picks {count:>5} of {args.samples}: {took:8.1f} ms "
                  f"({took / baseline:6.1f}x least confidence)")  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
