"""Built-in query strategies: least confidence, margin, entropy and random rank samples by
the classifier alone; core-set and diverse margin also look at where samples lie in the
latent space, so a batch covers it instead of piling up in one uncertain corner."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from activelab.hookspecs import hookimpl
from activelab.strategy import QueryStrategy

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
    the others picked (a good start when there are few labels or no classifier yet)."""

    kind = "coreset"

    def select(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        count: int,
        seed: int | None = None,
        latent: np.ndarray | None = None,
    ) -> np.ndarray:
        candidates = np.flatnonzero(~labeled)
        if latent is None or candidates.size == 0 or count <= 0:
            return RandomSampling().select(probabilities, labeled, count, seed)
        points = np.asarray(latent, dtype=np.float64)
        return k_center_greedy(points, np.flatnonzero(labeled), candidates, count)


class DiverseMargin(QueryStrategy):
    """The most uncertain samples by margin, spread over the latent map: the `pool_factor` x
    batch smallest margins, then the batch that covers them best."""

    kind = "diverse_margin"
    pool_factor = 10

    def select(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        count: int,
        seed: int | None = None,
        latent: np.ndarray | None = None,
    ) -> np.ndarray:
        pool_size = count * self.pool_factor
        uncertain = Margin().select(probabilities, labeled, pool_size, seed)
        if latent is None or len(uncertain) <= count:
            return uncertain[:count]
        points = np.asarray(latent, dtype=np.float64)
        return k_center_greedy(points, np.flatnonzero(labeled), np.sort(uncertain), count)


@hookimpl
def register_strategies(register: Callable[[type], None]) -> None:
    for cls in (LeastConfidence, Margin, Entropy, RandomSampling, CoreSet, DiverseMargin):
        register(cls)
