"""Learning from few labels on `digits`: the active-learning loop against the baselines.

For each seed: a stratified 30 % test split that is never labeled (the model still sees it
unlabeled: the semi-supervised setting), 10 labels to start (one per class, from the pool),
then +10 per round up to 50, each round picked by a query strategy among the pool samples
(`next_to_label(candidates=pool, seed=...)`), labeled with the true class, and trained as a
run that continues the last one's checkpoint (`launch(resume_from=...)`, the default length).
Everything goes through activelab's real API on a real MLflow store, and rounds train the
way the app trains them: in the warm worker process (`--in-process`: in this process). A
round's overhead is its wall time, from the launch to the predictions in hand, minus its
training compute (the run's `train_time_s`: first to last step).

Baselines on the same labels in the same run: scikit-learn LogisticRegression on the pixels
and LabelSpreading (knn, 7 neighbours) over all samples, scored on the same test split.

    .venv/bin/python tests/bench/bench_learning.py [--seeds 3] [--jobs 2]

The last line printed is one JSON object of the figures (accuracies in %), among them the
keys issue 17 names: ssvae_acc_10/30/50, logreg_acc_50, labelspreading_acc_50,
best_strategy, strategy_gain_pts_30, worst_strategy_gap_pts, auto_gap_pts, map_knn_acc_50,
round_overhead_s, quick_start_acc.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROUNDS = (10, 20, 30, 40, 50)
STRATEGIES = (
    "random", "least_confidence", "margin", "entropy",
    "coreset", "diverse_margin", "typiclust", "auto",
)  # fmt: skip
TEST_FRACTION = 0.3


def digits() -> tuple[np.ndarray, np.ndarray]:
    from activelab.tasks.datasets import Digits

    bundle = Digits().load()
    return bundle.images.reshape(len(bundle.images), -1), bundle.true_labels


def split(truth: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    pool, test = train_test_split(
        np.arange(len(truth)), test_size=TEST_FRACTION, stratify=truth, random_state=seed
    )
    return np.sort(pool), np.sort(test)


def first_labels(truth: np.ndarray, pool: np.ndarray, seed: int) -> dict[int, int]:
    rng = np.random.default_rng(seed)
    return {int(rng.choice(pool[truth[pool] == c])): int(c) for c in np.unique(truth)}


IN_PROCESS = False  # --in-process


def train_round(model, resume_from: str | None, threads: int) -> tuple[str, object, float, float]:
    """One round: (run id, predictions frame, wall s, training compute s)."""
    start = time.perf_counter()
    handle = model.launch(
        resume_from=resume_from,
        config={"trainer.threads": threads},
        in_process=IN_PROCESS,
        system_metrics=False,
    )
    status = handle.wait(timeout=600, poll=0.1)
    if status != "FINISHED":
        raise RuntimeError(f"round run {handle.run_id} ended {status}")
    frame = model._predictions_frame(handle.run_id)[1]
    wall = time.perf_counter() - start
    return handle.run_id, frame, wall, handle.metrics["train_time_s"]


def run_job(job: tuple[int, tuple[str, ...], int, str]) -> dict:
    """One seed, some strategies: the shared first round, then 4 rounds per strategy."""
    seed, strategies, threads, folder, in_process = job
    global IN_PROCESS
    IN_PROCESS = in_process
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    from activelab import standby
    from activelab.models import Lab

    _images, truth = digits()
    pool, test = split(truth, seed)
    home = Path(folder) / f"seed{seed}-{strategies[0]}"
    lab = Lab(tracking_uri=f"sqlite:///{home}/mlflow.db", home=home)
    if not in_process:
        standby.ensure(home)  # as the app does when it starts
    start_labels = first_labels(truth, pool, seed)
    results: dict = {"accuracy": {}, "map_knn": {}, "wall": [], "compute": []}

    base = lab.create_model("first-round", config={"trainer.seed": seed})
    base.set_labels(start_labels)
    first_run, frame, wall, compute = train_round(base, None, threads)
    results["wall"].append(wall)
    results["compute"].append(compute)
    first = score(frame, truth, pool, test)

    for strategy in strategies:
        model = lab.create_model(strategy, config={"trainer.seed": seed})
        model.set_labels(start_labels)
        accuracies, maps = [first[0]], [first[1]]
        # every strategy continues the same first round (copied in as a run of this model)
        run_id = adopt_checkpoint(base, model, first_run)
        for count in ROUNDS[1:]:
            picked = model.next_to_label(
                10, strategy=strategy, run=run_id, candidates=pool, seed=seed * 1000 + count
            )
            model.set_labels({i: int(truth[i]) for i in picked})
            run_id, frame, wall, compute = train_round(model, run_id, threads)
            results["wall"].append(wall)
            results["compute"].append(compute)
            accuracy, map_knn = score(frame, truth, pool, test)
            accuracies.append(accuracy)
            maps.append(map_knn)
        results["accuracy"][strategy] = accuracies
        results["map_knn"][strategy] = maps
        print(f"seed {seed} {strategy:>16}: " + " ".join(f"{a:5.1f}" for a in accuracies),
              flush=True)  # fmt: skip
    return results


def adopt_checkpoint(source, target, run_id: str) -> str:
    """Copy `run_id`'s checkpoint and predictions into a finished run of `target`."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    from activelab import keys
    from activelab.runs import list_checkpoints
    from activelab.runtime import PREDICTIONS_PATH

    client = MlflowClient(target.lab.settings.tracking_uri)
    original = client.get_run(run_id)
    copy = client.create_run(
        target.id, run_name="first round (shared)", tags={keys.RUN_KIND: "train"}
    ).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        for path in (list_checkpoints(source.lab.tracking, run_id)[-1], PREDICTIONS_PATH):
            local = client.download_artifacts(run_id, path, tmp)
            client.log_artifact(copy, local, str(Path(path).parent))
    client.set_tag(copy, keys.PREDICTIONS, PREDICTIONS_PATH)
    items = [Param(k, v) for k, v in original.data.params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(copy, params=items[start : start + 100])
    client.set_terminated(copy, "FINISHED")
    return copy


def score(frame, truth: np.ndarray, pool: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(test accuracy %, 5-NN accuracy % of the 2-D map: fit on the pool, scored on test)."""
    from sklearn.neighbors import KNeighborsClassifier

    predicted = frame["predicted"].to_numpy()
    accuracy = float((predicted[test] == truth[test]).mean() * 100)
    points = frame[["z0", "z1"]].to_numpy()
    knn = KNeighborsClassifier(5).fit(points[pool], truth[pool])
    return accuracy, float(knn.score(points[test], truth[test]) * 100)


def baselines(seeds: int) -> dict[str, list[float]]:
    """LogisticRegression and LabelSpreading on the random picks of every round."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelSpreading

    images, truth = digits()
    found: dict[str, list[list[float]]] = {"logreg": [], "labelspreading": []}
    for seed in range(seeds):
        pool, test = split(truth, seed)
        labels = np.full(len(truth), -1)
        for index, label in first_labels(truth, pool, seed).items():
            labels[index] = label
        rows = {"logreg": [], "labelspreading": []}
        for count in ROUNDS:
            if count > ROUNDS[0]:  # the same picks as the random strategy's rounds
                labeled = labels >= 0
                available = np.zeros(len(truth), dtype=bool)
                available[pool] = True
                available &= ~labeled
                rng = np.random.default_rng(seed * 1000 + count)
                ranked = rng.random(len(truth))
                picks = np.flatnonzero(available)[
                    np.argsort(-(ranked[available] + rng.random(available.sum()) * 1e-9))
                ][:10]
                labels[picks] = truth[picks]
            known = labels >= 0
            logreg = LogisticRegression(max_iter=2000).fit(images[known], labels[known])
            rows["logreg"].append(float(logreg.score(images[test], truth[test]) * 100))
            spreading = LabelSpreading(kernel="knn", n_neighbors=7, max_iter=100)
            spreading.fit(images, labels)
            rows["labelspreading"].append(
                float((spreading.transduction_[test] == truth[test]).mean() * 100)
            )
        for key in rows:
            found[key].append(rows[key])
    return {key: list(np.mean(values, axis=0)) for key, values in found.items()}


def quick_start(folder: str) -> float:
    """Test accuracy (%) of the model the app's Quick start makes: its labels, its preset,
    its default length, trained as a worker process (as the app launches it)."""
    from activelab.models import Lab
    from activelab.presets import quick_start_labels

    _images, truth = digits()
    home = Path(folder) / "quick-start"
    lab = Lab(tracking_uri=f"sqlite:///{home}/mlflow.db", home=home)
    model = lab.create_model("quick-start", preset="default", dataset="digits")
    seeded = quick_start_labels(truth)
    model.set_labels(seeded)
    handle = model.launch()
    if handle.wait(timeout=600) != "FINISHED":
        raise RuntimeError("the Quick start run did not finish")
    predicted = model._predictions_frame(handle.run_id)[1]["predicted"].to_numpy()
    others = np.setdiff1d(np.arange(len(truth)), list(seeded))
    return float((predicted[others] == truth[others]).mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="processes (1 torch thread each)")
    parser.add_argument("--in-process", action="store_true", help="train in the job processes")
    args = parser.parse_args()
    started = time.perf_counter()
    halves = (STRATEGIES[:4], STRATEGIES[4:])
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as folder:
        jobs = [
            (seed, half, 1, folder, args.in_process)
            for seed in range(args.seeds)
            for half in halves
        ]
        with ProcessPoolExecutor(args.jobs) as pool:
            pending = pool.map(run_job, jobs)
            quick = quick_start(folder)
            results = list(pending)
    base = baselines(args.seeds)

    def mean_curve(strategy: str) -> list[float]:
        curves = [r["accuracy"][strategy] for r in results if strategy in r["accuracy"]]
        return list(np.mean(curves, axis=0))

    curves = {s: mean_curve(s) for s in STRATEGIES}
    gaps = {
        s: [a - b for a, b in zip(curves[s], curves["random"], strict=True)][1:]
        for s in STRATEGIES
        if s != "random"
    }
    at_30 = ROUNDS.index(30)
    best = max(gaps, key=lambda s: curves[s][at_30])
    maps = [r["map_knn"]["random"][-1] for r in results if "random" in r["map_knn"]]
    overheads = [w - c for r in results for w, c in zip(r["wall"], r["compute"], strict=True)]
    computes = [c for r in results for c in r["compute"]]

    print(f"{'labels':>18} " + " ".join(f"{n:>6}" for n in ROUNDS))
    for name, curve in [*curves.items(), *((f"{k} (baseline)", v) for k, v in base.items())]:
        print(f"{name:>18} " + " ".join(f"{v:6.1f}" for v in curve))
    figures = {f"ssvae_acc_{n}": round(curves["random"][i], 1) for i, n in enumerate(ROUNDS)}
    figures.update({f"logreg_acc_{n}": round(base["logreg"][i], 1) for i, n in enumerate(ROUNDS)})
    figures.update(
        {
            f"labelspreading_acc_{n}": round(base["labelspreading"][i], 1)
            for i, n in enumerate(ROUNDS)
        }
    )
    figures.update(
        {
            "ssvae_vs_labelspreading_pts_50": round(
                curves["random"][-1] - base["labelspreading"][-1], 1
            ),
            "best_strategy": best,
            "strategy_gain_pts_30": round(gaps[best][at_30 - 1], 1),
            "worst_strategy_gap_pts": round(min(min(g) for g in gaps.values()), 1),
            "auto_gap_pts": round(min(gaps["auto"]), 1),
            "strategy_acc_50": {s: round(curves[s][-1], 1) for s in STRATEGIES},
            "strategy_acc_30": {s: round(curves[s][at_30], 1) for s in STRATEGIES},
            "map_knn_acc_50": round(float(np.mean(maps)), 1),
            "round_overhead_s": round(statistics.median(overheads), 2),
            "round_training_s": round(statistics.median(computes), 2),
            "quick_start_acc": round(quick, 1),
            "seeds": args.seeds,
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
