"""An active-learning loop from Python: train, ask a query strategy which samples to label,
label them (here from the data set's ground truth, standing in for a person), continue
training from the last checkpoint, and watch the accuracy on all samples climb.

.venv/bin/python examples/active_learning_loop.py                       # embedded store
.venv/bin/python examples/active_learning_loop.py --strategy typiclust --rounds 5
MLFLOW_TRACKING_URI=http://127.0.0.1:5000 .venv/bin/python examples/active_learning_loop.py

Every round is a run in the model's experiment, each continuing the one before it, so the
MLflow UI shows the lineage, the labels each round trained on and its curves.
"""

from __future__ import annotations

import argparse

import activelab
from activelab.tasks.datasets import Digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="auto", help="A query strategy's name.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=10, help="Samples labeled per round.")
    parser.add_argument(
        "--epochs", type=int, default=None, help="Epochs per round (default: the trainer's)."
    )
    parser.add_argument(
        "--worker", action="store_true", help="Train each round in its own process."
    )
    parser.add_argument("--seed-labels", type=int, default=1, help="Labels per class to start.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Config overrides, as `models create --set`.",
    )
    args = parser.parse_args()

    truth = Digits().load().true_labels  # the "person" who answers the queries
    overrides = dict(pair.split("=", 1) for pair in args.overrides)
    model = activelab.create_model(
        description=f"Active learning: {args.strategy}, {args.per_round} labels per round",
        config=overrides,
    )
    first_of_each_class = [int((truth == c).nonzero()[0][i])
                           for c in range(10) for i in range(args.seed_labels)]  # fmt: skip
    model.set_labels({i: int(truth[i]) for i in first_of_each_class})

    run = None
    for round_number in range(1, args.rounds + 1):
        # in this process by default: a warm trainer, so a round costs little beyond training
        run = model.launch(
            epochs=args.epochs,
            resume_from=run.run_id if run else None,
            wait=True,
            progress=True,
            in_process=not args.worker,
        )
        if run.status != "FINISHED":
            raise SystemExit(f"round {round_number}: the run ended {run.status}")
        accuracy = run.metrics.get("eval/classification/unlabeled_accuracy", float("nan"))
        print(f"round {round_number}: {model.labels.count:4d} labels -> accuracy {accuracy:.1%}"
              f"  (run {run.run_id})")  # fmt: skip
        if round_number < args.rounds:
            picked = model.next_to_label(args.per_round, strategy=args.strategy, run=run.run_id)
            model.set_labels({i: int(truth[i]) for i in picked})  # a person would label these
    print(f"model {model.name!r}: open the MLflow UI or `activelab serve` to see every round")


if __name__ == "__main__":
    main()
