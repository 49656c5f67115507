"""Learning from few labels: the data graph, label propagation, and the default model trained
for real on digits with one label per class."""

from __future__ import annotations

import numpy as np
import pytest

from activelab.tasks.datasets import Digits
from activelab.tasks.neighbors import nearest_neighbours, propagate_labels


def two_blobs(per_blob: int = 50) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate(
        [rng.normal(0.0, 1.0, (per_blob, 5)), rng.normal(12.0, 1.0, (per_blob, 5))]
    ).astype(np.float32)


def test_neighbours_are_other_samples_nearest_first_even_with_duplicates():
    points = two_blobs()
    points[1] = points[0]  # a duplicate may come back before the sample itself
    found = nearest_neighbours(points, 4)
    assert found.shape == (100, 4)
    assert not (found == np.arange(100)[:, None]).any()
    assert found[0, 0] == 1 and found[1, 0] == 0
    assert (found[:50] < 50).all() and (found[50:] >= 50).all()  # within its own blob


def test_one_label_per_cluster_spreads_over_it_with_certainty():
    points = two_blobs()
    labels = np.full(100, -1)
    labels[[3, 70]] = [1, 0]
    spread = propagate_labels(nearest_neighbours(points, 5), labels, num_classes=2)
    assert spread.classes[:50].tolist() == [1] * 50
    assert spread.classes[50:].tolist() == [0] * 50
    assert spread.certainty[[3, 70]].tolist() == [1.0, 1.0]
    assert (spread.certainty > 0.5).all()


def test_a_class_with_more_labels_does_not_swallow_its_neighbour():
    points = two_blobs()
    labels = np.full(100, -1)
    labels[:20] = 0  # twenty labels in one blob, one in the other
    labels[60] = 1
    spread = propagate_labels(nearest_neighbours(points, 5), labels, num_classes=2)
    assert (spread.classes[50:] == 1).all()


def test_one_label_per_class_trains_a_good_model_and_a_separating_map(local_lab, unique):
    """The default model, its default length, one true label per class: most of the other
    digits right, and a map on which each class is its own island."""
    from sklearn.neighbors import KNeighborsClassifier

    truth = Digits().load().true_labels
    rng = np.random.default_rng(0)
    model = local_lab.create_model(unique)
    model.set_labels({int(rng.choice(np.flatnonzero(truth == c))): int(c) for c in range(10)})
    handle = model.launch(in_process=True, wait=True, system_metrics=False)
    assert handle.status == "FINISHED"
    assert handle.metrics["eval/classification/unlabeled_accuracy"] >= 0.8
    frame = model.predictions()
    points = frame[["z0", "z1"]].to_numpy()
    half = np.arange(len(points)) % 2 == 0
    knn = KNeighborsClassifier(5).fit(points[half], truth[half])
    assert knn.score(points[~half], truth[~half]) >= 0.85
    assert handle.metrics["train_time_s"] > 0


@pytest.mark.parametrize("resuming", [False, True])
def test_the_default_length_scales_with_the_data_set(resuming):
    from activelab.dataset import DatasetInfo
    from activelab.tasks.ssvae import SSVAETrainer

    trainer = SSVAETrainer()
    small = DatasetInfo("digits", 1797, tuple("0123456789"), (1, 8, 8), True)
    large = DatasetInfo("mnist", 60000, tuple("0123456789"), (1, 28, 28), True)
    few, many = trainer.default_epochs(small, resuming), trainer.default_epochs(large, resuming)
    assert few > many >= SSVAETrainer.MIN_AUTO_EPOCHS
    steps = few * np.ceil((1797 - 179) / 128)
    assert steps >= (SSVAETrainer.AUTO_STEPS // 2 if resuming else SSVAETrainer.AUTO_STEPS)
    assert SSVAETrainer(epochs=7).default_epochs(small, resuming) == 7
