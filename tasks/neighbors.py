"""The data's nearest-neighbour graph and label propagation over it.

Few labels go far when they spread along the data's own neighbourhoods: the trainer builds a
k-nearest-neighbour graph of the samples once per run, propagates the person's labels over it
(Zhou et al. 2004, with class-balanced seeds and class-mass normalisation) and trains the
classifier on the result, weighted by how certain each propagated label is (Iscen et al. 2019,
"Label Propagation for Deep Semi-supervised Learning"). The same graph gives the labeling map
its neighbours (parametric neighbour embedding, as in parametric UMAP / NEG-t-SNE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Above this many pixels the neighbours are found in a PCA projection (exact kNN in 784-D on
# 60,000 samples costs minutes on 2 cores; 50 principal components keep the neighbourhoods).
PCA_ABOVE = 64
PCA_COMPONENTS = 50


@dataclass(frozen=True)
class PropagatedLabels:
    """A class and a certainty in [0, 1] for every sample of the graph (labeled ones: 1)."""

    classes: np.ndarray  # (N,) int64
    certainty: np.ndarray  # (N,) float32, 0 where no label reached the sample


def nearest_neighbours(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N, k) indices of each row's k nearest other rows (Euclidean), nearest first."""
    from sklearn.neighbors import NearestNeighbors

    flat = np.ascontiguousarray(points.reshape(len(points), -1), dtype=np.float32)
    k = max(1, min(k, len(flat) - 1))
    if flat.shape[1] > PCA_ABOVE and len(flat) > PCA_COMPONENTS:
        from sklearn.decomposition import PCA

        flat = PCA(PCA_COMPONENTS, random_state=seed).fit_transform(flat).astype(np.float32)
    finder = NearestNeighbors(n_neighbors=k + 1).fit(flat)
    _distances, found = finder.kneighbors(flat)
    return _drop_self(found, k)


def _drop_self(found: np.ndarray, k: int) -> np.ndarray:
    """Each row without the row itself (duplicates may put another sample first)."""
    rows = np.arange(len(found))[:, None]
    keep = found != rows
    # rows where the sample did not come back as its own neighbour keep their first k
    keep[keep.sum(axis=1) > k, -1] = False
    return found[keep].reshape(len(found), k).astype(np.int64)


_NEIGHBOURS: dict[tuple[int, int, int, bytes], np.ndarray] = {}


def neighbours_of(images: np.ndarray, k: int) -> np.ndarray:
    """`nearest_neighbours` of a data set, remembered for the next run in the same process
    (a warm trainer skips the search when only the labels changed)."""
    fingerprint = (len(images), images[0].size if len(images) else 0, k, _digest(images))
    hit = _NEIGHBOURS.get(fingerprint)
    if hit is None:
        hit = nearest_neighbours(images, k)
        _NEIGHBOURS.clear()  # one data set at a time: a 60,000 x 15 table is ~7 MB
        _NEIGHBOURS[fingerprint] = hit
    return hit


def _digest(images: np.ndarray) -> bytes:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).digest()


def propagate_labels(
    neighbours: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    alpha: float = 0.99,
    iterations: int = 50,
) -> PropagatedLabels:
    """Spread `labels` (-1 = unlabeled) over the symmetric kNN graph `neighbours`.

    Each class starts with the same total mass however many labels it has, and the result is
    normalised per class, so a class with more labels does not swallow its neighbours.
    """
    import scipy.sparse as sp

    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    graph = sp.csr_matrix((np.ones(n * k, np.float32), (rows, neighbours.ravel())), shape=(n, n))
    graph = graph + graph.T
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = sp.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    walk = (scale @ graph @ scale).tocsr()

    labeled = np.flatnonzero(labels >= 0)
    seeds = np.zeros((n, num_classes))
    seeds[labeled, labels[labeled]] = 1.0
    seeds /= np.maximum(seeds.sum(axis=0, keepdims=True), 1.0)
    spread = seeds.copy()
    for _ in range(iterations):
        spread = alpha * (walk @ spread) + (1 - alpha) * seeds
    spread /= np.maximum(spread.sum(axis=0, keepdims=True), 1e-12)

    total = spread.sum(axis=1, keepdims=True)
    share = spread / np.maximum(total, 1e-12)
    entropy = -(share * np.log(np.maximum(share, 1e-12))).sum(axis=1)
    certainty = 1.0 - entropy / np.log(max(num_classes, 2))
    certainty[total[:, 0] <= 0] = 0.0
    classes = share.argmax(axis=1)
    classes[labeled] = labels[labeled]
    certainty[labeled] = 1.0
    return PropagatedLabels(classes.astype(np.int64), certainty.astype(np.float32))


def heldout_accuracy(
    neighbours: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = 5, seed: int = 0
) -> float | None:
    """How often the graph gives a labeled sample its own label when that label is hidden
    (`folds`-fold; every class keeps one label visible, so a miss is the graph's, not a class
    left without labels); None with fewer than `folds` labels to hide. A graph that mixes the
    classes (pixel neighbours of rotated or noisy images) scores low here before its
    propagated labels mislead the classifier."""
    order = np.random.default_rng(seed).permutation(np.flatnonzero(labels >= 0))
    fold_of = np.full(len(labels), -1)
    seen: set[int] = set()
    next_fold = 0
    for index in order:
        if labels[index] not in seen:  # the first label of each class stays visible
            seen.add(int(labels[index]))
            continue
        fold_of[index] = next_fold
        next_fold = (next_fold + 1) % folds
    if (fold_of >= 0).sum() < folds:
        return None
    right = total = 0
    for fold in range(folds):
        hidden = np.flatnonzero(fold_of == fold)
        visible = labels.copy()
        visible[hidden] = -1
        spread = propagate_labels(neighbours, visible, num_classes)
        right += int((spread.classes[hidden] == labels[hidden]).sum())
        total += len(hidden)
    return right / total
