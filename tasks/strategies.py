"""Built-in query strategies: least confidence, margin, entropy and random rank samples by
the classifier alone; core-set, diverse margin and typical clusters also look at where
samples lie in the latent space, so a batch covers it instead of piling up in one uncertain
corner; `auto` picks typical samples while labels are scarce, then uncertain and diverse ones.
Every strategy but random spreads a batch over the predicted classes (see QueryStrategy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from activelab.hookspecs import hookimpl
from activelab.strategy import BALANCE_POOL, QueryStrategy

if TYPE_CHECKING:
    from collections.abc import Callable


class LeastConfidence(QueryStrategy):
    """Samples whose most likely class is least likely."""

    kind = "least_confidence"

    def scores(self, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return 1.0 - probabilities.max(axis=1)


class Margin(QueryStrategy):
    """Samples whose two most likely classes are closest."""

    kind = "margin"

    def scores(self, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if probabilities.shape[1] < 2:
            return np.zeros(len(probabilities))
        top_two = np.partition(probabilities, -2, axis=1)[:, -2:]
        return -(top_two[:, 1] - top_two[:, 0])


class Entropy(QueryStrategy):
    """Samples whose class distribution has the highest entropy."""

    kind = "entropy"

    def scores(self, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = np.clip(probabilities, 1e-12, 1.0)
        return -(p * np.log(p)).sum(axis=1)


class RandomSampling(QueryStrategy):
    """Unlabeled samples in random order (the baseline every strategy should beat)."""

    kind = "random"
    balanced = False  # the plain baseline

    def scores(self, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.random(len(probabilities))


def k_center_greedy(
    points: np.ndarray, centers: np.ndarray, candidates: np.ndarray, count: int
) -> np.ndarray:
    """Greedy k-center (Sener & Savarese, 2018): `count` of `candidates` (row indices of
    `points`), each the one farthest from the `centers` and from those picked before it."""
    from scipy.spatial import cKDTree

    pool = np.ascontiguousarray(points[candidates])
    count = min(count, len(pool))
    picked: list[int] = []
    if count <= 0:
        return np.empty(0, dtype=np.int64)

    def squared_distances(to: np.ndarray) -> np.ndarray:
        diff = pool - to
        return np.einsum("ij,ij->i", diff, diff)

    # squared distances throughout: the same order, no square roots in the loop
    if len(centers):
        nearest, _ = cKDTree(points[centers]).query(pool)
        nearest **= 2
    else:  # nothing labeled: start from the sample nearest the middle of the data
        first = int(np.argmin(squared_distances(pool.mean(axis=0))))
        picked.append(first)
        nearest = squared_distances(pool[first])
        nearest[first] = -np.inf
    while len(picked) < count:
        best = int(np.argmax(nearest))
        picked.append(best)
        np.minimum(nearest, squared_distances(pool[best]), out=nearest)
        nearest[best] = -np.inf  # never twice
    return candidates[np.asarray(picked, dtype=np.int64)]


class CoreSet(QueryStrategy):
    """Samples that cover the latent map: each the farthest from every labeled sample and from
    the others picked."""

    kind = "coreset"

    def rank(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        available: np.ndarray,
        count: int,
        seed: int | None,
        latent: np.ndarray | None,
    ) -> np.ndarray:
        if latent is None:
            return RandomSampling().rank(probabilities, labeled, available, count, seed, None)
        points = np.asarray(latent, dtype=np.float64)
        # the greedy order of BALANCE_POOL x the batch: a balanced batch picks from it
        wanted = min(int(available.sum()), count * BALANCE_POOL)
        return k_center_greedy(points, np.flatnonzero(labeled), np.flatnonzero(available), wanted)


class DiverseMargin(QueryStrategy):
    """The most uncertain samples by margin, spread over the latent map: the `pool_factor` x
    batch smallest margins, then the batch that covers them best."""

    kind = "diverse_margin"
    pool_factor = 10

    def rank(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        available: np.ndarray,
        count: int,
        seed: int | None,
        latent: np.ndarray | None,
    ) -> np.ndarray:
        size = min(int(available.sum()), count * self.pool_factor)
        smallest = Margin().rank(probabilities, labeled, available, size, seed, None)[:size]
        if latent is None or size <= count:
            return smallest
        # the whole pool in greedy k-center order: a balanced batch picks from its front
        points = np.asarray(latent, dtype=np.float64)
        return k_center_greedy(points, np.flatnonzero(labeled), np.sort(smallest), size)


class TypicalClusters(QueryStrategy):
    """TypiClust (Hacohen et al. 2022): cluster the latent into as many clusters as there
    will be labels, and label the most typical sample (the densest: the smallest mean
    distance to its neighbours) of each cluster that has the fewest labels. The low-budget
    choice: it labels what the data is made of, not its odd corners."""

    kind = "typiclust"
    balanced = False  # one pick per cluster already spreads the batch
    # the paper's settings: 20 neighbours for typicality, clusters of at least 5, at most 500
    neighbours = 20
    min_cluster = 5
    max_clusters = 500

    def rank(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        available: np.ndarray,
        count: int,
        seed: int | None,
        latent: np.ndarray | None,
    ) -> np.ndarray:
        if latent is None:
            return RandomSampling().rank(probabilities, labeled, available, count, seed, None)
        points = np.asarray(latent, dtype=np.float32)
        clusters = min(int(labeled.sum()) + count, self.max_clusters, len(points))
        assignment = cluster_points(points, clusters, seed)
        sizes = np.bincount(assignment, minlength=clusters)
        have = np.bincount(assignment[np.asarray(labeled, dtype=bool)], minlength=clusters)
        open_clusters = {
            int(c) for c in np.unique(assignment[available]) if sizes[c] >= self.min_cluster
        } or {int(c) for c in np.unique(assignment[available])}
        picked: list[int] = []
        free = available.copy()
        dense: dict[int, np.ndarray] = {}  # typicality of each visited cluster's members
        while len(picked) < count and open_clusters:
            cluster = min(open_clusters, key=lambda c: (have[c], -sizes[c]))
            members = np.flatnonzero(assignment == cluster)
            if not free[members].any():
                open_clusters.discard(cluster)
                continue
            if cluster not in dense:
                dense[cluster] = typicality(points[members], self.neighbours)
            score = np.where(free[members], dense[cluster], -np.inf)
            best = int(members[int(np.argmax(score))])
            picked.append(best)
            free[best] = False
            have[cluster] += 1
        return np.asarray(picked, dtype=np.int64)


def cluster_points(points: np.ndarray, clusters: int, seed: int | None) -> np.ndarray:
    """K-means cluster of each point (mini-batch k-means past 10,000 points)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(points) > 10000:
        finder = MiniBatchKMeans(clusters, random_state=seed or 0, n_init=3, batch_size=4096)
    else:
        finder = KMeans(clusters, random_state=seed or 0, n_init=1)
    return finder.fit_predict(points)


def typicality(points: np.ndarray, neighbours: int) -> np.ndarray:
    """1 / mean distance of each point to its nearest neighbours among `points`."""
    from sklearn.neighbors import NearestNeighbors

    k = min(neighbours + 1, len(points))
    if k < 2:
        return np.ones(len(points))
    distances, _ = NearestNeighbors(n_neighbors=k).fit(points).kneighbors(points)
    return 1.0 / (distances[:, 1:].mean(axis=1) + 1e-8)


class Auto(QueryStrategy):
    """The budget-aware default: typical samples of each cluster while labels are scarce
    (fewer than `scarce_per_class` per class) or no classifier is trained yet, then uncertain
    samples spread over the map."""

    kind = "auto"
    balanced = False  # each of the two balances in its own way
    scarce_per_class = 5

    def select(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        count: int,
        seed: int | None = None,
        latent: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
    ) -> np.ndarray:
        classes = max(2, probabilities.shape[1] if probabilities.ndim == 2 else 2)
        scarce = int(np.asarray(labeled).sum()) < self.scarce_per_class * classes
        # no trained classifier yet (a cold start): only the representation can guide
        untrained = bool(np.isnan(probabilities).all())
        chosen = TypicalClusters() if scarce or untrained else DiverseMargin()
        return chosen.select(probabilities, labeled, count, seed, latent, candidates)


@hookimpl
def register_strategies(register: Callable[[type], None]) -> None:
    for cls in (
        LeastConfidence, Margin, Entropy, RandomSampling, CoreSet, DiverseMargin,
        TypicalClusters, Auto,
    ):  # fmt: skip
        register(cls)
