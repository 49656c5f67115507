"""Built-in analyzers: the confusion matrix and per-class accuracy of a checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from activelab.analyzer import AnalysisInput, Analyzer, AnalyzerResult
from activelab.hookspecs import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable


def reference(inputs: AnalysisInput) -> tuple[np.ndarray, str]:
    """The classes to score against: the true classes where the data has them, else the
    person's labels (only labeled samples count)."""
    if inputs.data.true_labels is not None:
        return np.asarray(inputs.data.true_labels), "true classes"
    return np.asarray(inputs.labels), "your labels"


class ConfusionMatrix(Analyzer):
    """Counts of each true class (rows) predicted as each class (columns)."""

    kind = "confusion_matrix"

    def analyze(self, inputs: AnalysisInput) -> AnalyzerResult:
        import pandas as pd

        classes = list(inputs.data.info.classes)
        truth, source = reference(inputs)
        predicted = inputs.predictions["predicted"].to_numpy()
        keep = (truth >= 0) & (predicted >= 0)
        counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(counts, (truth[keep], predicted[keep]), 1)
        table = pd.DataFrame(counts, index=classes, columns=classes)
        table.index.name = "true \\ predicted"
        return AnalyzerResult(
            "Confusion matrix", table, f"{int(keep.sum())} samples, rows: {source}."
        )


class PerClassAccuracy(Analyzer):
    """Samples, labeled samples and accuracy of each class."""

    kind = "per_class_accuracy"

    def analyze(self, inputs: AnalysisInput) -> AnalyzerResult:
        import pandas as pd

        classes = list(inputs.data.info.classes)
        truth, source = reference(inputs)
        predicted = inputs.predictions["predicted"].to_numpy()
        rows = []
        for index, name in enumerate(classes):
            members = truth == index
            total = int(members.sum())
            correct = int((predicted[members] == index).sum())
            rows.append(
                {
                    "class": name,
                    "samples": total,
                    "labeled": int((inputs.labels == index).sum()),
                    "correct": correct,
                    "accuracy": round(correct / total, 4) if total else float("nan"),
                }
            )
        return AnalyzerResult(
            "Per-class accuracy", pd.DataFrame(rows).set_index("class"), f"Against {source}."
        )


@hookimpl
def register_analyzers(register: Callable[[type], None]) -> None:
    for cls in (ConfusionMatrix, PerClassAccuracy):
        register(cls)
