"""Built-in analyzers: the confusion matrix and per-class accuracy of a checkpoint, and how
the latent map took shape over a run's checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from activelab.analyzer import AnalysisInput, Analyzer, AnalyzerResult
from activelab.hookspecs import hookimpl
from activelab.runs import latent_of
from activelab.tasks.latent_image import ScatterPanel, draw_panels, to_2d

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


def spread(items: tuple[str, ...], count: int) -> list[str]:
    """At most `count` items evenly spread over `items`, the first and last included."""
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def separation_figures(latent: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """How well the latent keeps classes apart, from the samples that have a class:
    nearest-centroid accuracy, and the mean distance between class centroids over the mean
    spread within a class (higher is better for both)."""
    known = classes >= 0
    latent, classes = latent[known], classes[known]
    present = np.unique(classes)
    if len(present) < 2:
        return {"nearest_centroid_accuracy": float("nan"), "separation": float("nan")}
    centroids = np.stack([latent[classes == c].mean(axis=0) for c in present])
    distances = np.linalg.norm(latent[:, None, :] - centroids[None, :, :], axis=2)
    nearest = present[distances.argmin(axis=1)]
    own = distances[np.arange(len(latent)), np.searchsorted(present, classes)]
    between = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=2)
    mean_between = between.sum() / (len(present) * (len(present) - 1))
    within = float(np.sqrt((own**2).mean()))
    return {
        "nearest_centroid_accuracy": round(float((nearest == classes).mean()), 4),
        "separation": round(float(mean_between / within), 4) if within > 0 else float("nan"),
    }


class LatentOverCheckpoints(Analyzer):
    """The latent map at up to six checkpoints of the run, and how well it separates classes."""

    kind = "latent_over_checkpoints"
    max_checkpoints = 6

    def analyze(self, inputs: AnalysisInput) -> AnalyzerResult:
        import pandas as pd

        truth, source = reference(inputs)
        truth = np.asarray(truth, dtype=np.int64)
        checkpoints = inputs.checkpoints if inputs.predictions_at else ()
        chosen = spread(checkpoints, self.max_checkpoints) or [inputs.checkpoint]
        rows, panels = [], []
        for done, path in enumerate(chosen):
            name = path.rsplit("/", 1)[-1]
            inputs.progress(done, len(chosen), name)
            frame = inputs.predictions_at(path) if inputs.predictions_at else inputs.predictions
            latent = latent_of(frame)
            predicted = frame["predicted"].to_numpy()
            has_class = truth >= 0
            accuracy = (
                float((predicted[has_class] == truth[has_class]).mean())
                if has_class.any()
                else float("nan")
            )
            rows.append(
                {"checkpoint": name, **separation_figures(latent, truth),
                 "classifier_accuracy": round(accuracy, 4)}
            )  # fmt: skip
            panels.append(ScatterPanel(name.removesuffix(".pt"), to_2d(latent), truth))
        inputs.progress(len(chosen), len(chosen), "drawing")
        projected = "" if latent.shape[1] <= 2 else " Latents above 2-D: two principal components."
        return AnalyzerResult(
            "Latent map over checkpoints",
            pd.DataFrame(rows).set_index("checkpoint"),
            f"{len(chosen)} checkpoint(s), colored and scored by {source}.{projected}",
            image=draw_panels(panels, classes=list(inputs.data.info.classes)),
        )


@hookimpl
def register_analyzers(register: Callable[[type], None]) -> None:
    for cls in (ConfusionMatrix, PerClassAccuracy, LatentOverCheckpoints):
        register(cls)
