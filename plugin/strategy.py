"""Query strategies: which samples a person should label next."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from activelab.component import Component

if TYPE_CHECKING:
    import numpy as np

# Strategies that rank by where samples lie (k-center) rank this many times the batch, and a
# balanced batch is chosen from those.
BALANCE_POOL = 5


class QueryStrategy(Component):
    """Ranks unlabeled samples; subclasses set `kind` and implement `scores` (or `rank`).

    `probabilities` is the classifier's (N, K) output for every sample (rows may be NaN when
    the model has no classifier yet). Higher score = more worth labeling. Strategies that look
    at where samples lie (diversity, coverage) override `rank`, which also gets the (N, D)
    `latent` of every sample. With `balanced` (the default), a batch is spread over the
    predicted classes, fewest-labeled classes first, so no class is starved.
    """

    balanced: ClassVar[bool] = True

    def scores(self, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def select(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        count: int,
        seed: int | None = None,
        latent: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
    ) -> np.ndarray:
        """Up to `count` sample indices to label next, best first: unlabeled, and within
        `candidates` (a boolean mask or indices) when given."""
        import numpy as np

        available = ~np.asarray(labeled, dtype=bool)
        if candidates is not None:
            available &= candidate_mask(candidates, len(available))
        count = min(int(count), int(available.sum()))
        if count <= 0:
            return np.empty(0, dtype=np.int64)
        predicted = predicted_classes(probabilities)
        ranked = self.rank(probabilities, labeled, available, count, seed, latent)
        if self.balanced and predicted is not None:
            return balanced_pick(ranked, predicted, labeled, count)
        return ranked[:count]

    def rank(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        available: np.ndarray,
        count: int,
        seed: int | None,
        latent: np.ndarray | None,
    ) -> np.ndarray:
        """The best of the `available` samples, best first (by `scores`): `count` of them,
        or all of them for a balanced strategy, so every class's best can be reached."""
        import numpy as np

        if self.balanced:
            count = int(available.sum())
        rng = np.random.default_rng(seed)
        scores = np.asarray(self.scores(probabilities, rng), dtype=np.float64)
        scores = np.where(np.isnan(scores), -np.inf, scores)
        pool = np.flatnonzero(available)
        # Ties (e.g. a model with no classifier yet) are broken at random, not by index.
        ranked = scores[pool] + rng.random(pool.size) * 1e-9
        top = np.argpartition(-ranked, count - 1)[:count]
        top = top[np.argsort(-ranked[top])]
        return pool[top].astype(np.int64)


def candidate_mask(candidates: np.ndarray, size: int) -> np.ndarray:
    """A boolean mask of `size` from a mask or a list of indices (checked)."""
    import numpy as np

    from activelab.errors import InvalidConfigError

    values = np.asarray(candidates)
    if values.dtype == bool:
        if values.shape != (size,):
            raise InvalidConfigError(
                f"A candidates mask needs one entry per sample ({size}), not {values.shape}."
            )
        return values
    indices = values.astype(np.int64).ravel()
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        raise InvalidConfigError(
            f"Candidate sample indices must lie in 0..{size - 1}; got "
            f"{int(indices.min())}..{int(indices.max())}."
        )
    mask = np.zeros(size, dtype=bool)
    mask[indices] = True
    return mask


def predicted_classes(probabilities: np.ndarray) -> np.ndarray | None:
    """The most likely class of each sample, or None when there is no classifier yet."""
    import numpy as np

    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        return None
    if np.isnan(probabilities).all():
        return None
    return np.nan_to_num(probabilities, nan=-1.0).argmax(axis=1)


def balanced_pick(
    ranked: np.ndarray, predicted: np.ndarray, labeled: np.ndarray, count: int
) -> np.ndarray:
    """`count` of the `ranked` samples (best first), taken class by class: each pick goes to
    the predicted class with the fewest labeled-or-picked samples that still has candidates,
    which gets its best-ranked one."""
    import numpy as np

    classes = int(predicted.max()) + 1
    have = np.bincount(predicted[np.asarray(labeled, dtype=bool)], minlength=classes)
    queues: dict[int, list[int]] = {}
    for index in ranked:
        queues.setdefault(int(predicted[index]), []).append(int(index))
    for queue in queues.values():
        queue.reverse()  # pop() takes the best
    picked: list[int] = []
    while len(picked) < count and queues:
        neediest = min(queues, key=lambda c: (have[c], -len(queues[c])))
        picked.append(queues[neediest].pop())
        have[neediest] += 1
        if not queues[neediest]:
            del queues[neediest]
    return np.asarray(picked, dtype=np.int64)
