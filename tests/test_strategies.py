"""Query strategies for low budgets: class balance, typical clusters, `auto`, candidates and
seeds (the strategies on their own; with real training in test_training.py)."""

from __future__ import annotations

import numpy as np
import pytest

from activelab.errors import InvalidConfigError
from activelab.plugins import get_plugins


def strategy(kind: str):
    return get_plugins().get("strategies", kind)()


def blobs(centres: list[tuple[float, float]], per_blob: int = 60, seed: int = 0):
    """Points around `centres` (sd 1) and which blob each came from."""
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.normal(c, 1.0, size=(per_blob, 2)) for c in centres])
    return points, np.repeat(np.arange(len(centres)), per_blob)


def test_no_strategy_but_random_starves_a_class():
    # class 0 is predicted for 80 very uncertain samples; classes 1-4 for 5 surer ones each
    rng = np.random.default_rng(0)
    probabilities = np.full((100, 5), 0.01)
    probabilities[:80, 0] = 0.30
    probabilities[:80, 1:] = 0.175
    for c in range(1, 5):
        rows = slice(80 + (c - 1) * 5, 80 + c * 5)
        probabilities[rows, c] = 0.96
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    latent = rng.normal(size=(100, 2))
    labeled = np.zeros(100, dtype=bool)
    predicted = probabilities.argmax(axis=1)
    for kind in ("least_confidence", "margin", "entropy", "coreset", "diverse_margin"):
        picked = strategy(kind).select(probabilities, labeled, 10, seed=0, latent=latent)
        counts = np.bincount(predicted[picked], minlength=5)
        assert counts.min() >= 1, f"{kind} starved a class: {counts.tolist()}"
        assert counts.max() <= 3, f"{kind} piled up on one class: {counts.tolist()}"


def test_a_balanced_batch_serves_the_classes_with_fewest_labels_first():
    probabilities = np.tile(np.eye(3)[[0, 1, 2]], (10, 1)) * 0.9 + 0.1 / 3  # 30 samples
    labeled = np.zeros(30, dtype=bool)
    labeled[[0, 3, 6, 1]] = True  # class 0 has 3 labels, class 1 one, class 2 none
    picked = strategy("least_confidence").select(probabilities, labeled, 3, seed=0)
    predicted = probabilities.argmax(axis=1)
    assert sorted(predicted[picked].tolist()) == [1, 2, 2]


def test_typiclust_labels_the_dense_middle_of_each_cluster():
    points, blob = blobs([(0, 0), (20, 0), (0, 20)])
    outliers = np.array([[10.0, 10.0], [-12.0, 3.0], [25.0, 25.0]])
    points = np.concatenate([points, outliers])
    blob = np.concatenate([blob, [-1, -1, -1]])
    labeled = np.zeros(len(points), dtype=bool)
    nan = np.full((len(points), 3), np.nan)  # no classifier yet: typicality needs none
    picked = strategy("typiclust").select(nan, labeled, 3, seed=0, latent=points)
    assert sorted(blob[picked].tolist()) == [0, 1, 2]  # one per cluster, no outlier
    centres = np.array([(0, 0), (20, 0), (0, 20)])
    assert all(np.linalg.norm(points[i] - centres[blob[i]]) < 1.0 for i in picked)

    labeled[np.flatnonzero(blob == 0)[0]] = True  # cluster 0 has its label already
    picked = strategy("typiclust").select(nan, labeled, 2, seed=0, latent=points)
    assert sorted(blob[picked].tolist()) == [1, 2]


def test_auto_is_typical_while_labels_are_scarce_then_uncertain_and_diverse():
    points, blob = blobs([(0, 0), (20, 0)], per_blob=100)
    probabilities = np.stack([blob == 0, blob == 1], axis=1).astype(float) * 0.8 + 0.1
    probabilities[::3] = 0.5  # uncertain samples, more than diverse margin's pool
    labeled = np.zeros(len(points), dtype=bool)
    labeled[[0, 100]] = True  # 1 per class: scarce
    auto = strategy("auto").select(probabilities, labeled, 4, seed=1, latent=points)
    typical = strategy("typiclust").select(probabilities, labeled, 4, seed=1, latent=points)
    assert auto.tolist() == typical.tolist()
    labeled[np.r_[0:5, 100:105]] = True  # 5 per class: enough for uncertainty to pay
    auto = strategy("auto").select(probabilities, labeled, 4, seed=1, latent=points)
    diverse = strategy("diverse_margin").select(probabilities, labeled, 4, seed=1, latent=points)
    assert auto.tolist() == diverse.tolist()
    assert np.allclose(probabilities[auto], 0.5)  # the uncertain ones


def test_candidates_restrict_the_picks_and_a_seed_repeats_them():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=200)
    latent = rng.normal(size=(200, 2))
    labeled = np.zeros(200, dtype=bool)
    pool = np.arange(50, 120)
    for kind in ("random", "margin", "coreset", "typiclust", "auto"):
        picked = strategy(kind).select(
            probabilities, labeled, 12, seed=5, latent=latent, candidates=pool
        )
        assert len(picked) == 12 and set(picked.tolist()) <= set(pool.tolist()), kind
        again = strategy(kind).select(
            probabilities, labeled, 12, seed=5, latent=latent, candidates=pool
        )
        assert picked.tolist() == again.tolist(), kind
    assert (
        strategy("random").select(probabilities, labeled, 12, seed=6).tolist()
        != strategy("random").select(probabilities, labeled, 12, seed=7).tolist()
    )
    mask = np.zeros(200, dtype=bool)
    mask[[3, 4]] = True
    assert sorted(strategy("margin").select(probabilities, labeled, 5, candidates=mask)) == [3, 4]
    with pytest.raises(InvalidConfigError, match="must lie in 0..199"):
        strategy("margin").select(probabilities, labeled, 5, candidates=[1, 200])
    with pytest.raises(InvalidConfigError, match="one entry per sample"):
        strategy("margin").select(probabilities, labeled, 5, candidates=np.ones(3, dtype=bool))
