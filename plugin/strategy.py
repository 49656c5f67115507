"""Query strategies: which samples a person should label next."""

from __future__ import annotations

from typing import TYPE_CHECKING

from activelab.component import Component

if TYPE_CHECKING:
    import numpy as np


class QueryStrategy(Component):
    """Ranks unlabeled samples; subclasses set `kind` and implement `scores`.

    `probabilities` is the classifier's (N, K) output for every sample (rows may be NaN when
    the model has no classifier yet). Higher score = more worth labeling. Strategies that look
    at where samples lie (diversity, coverage) override `select`, which also gets the (N, D)
    `latent` of every sample.
    """

    def scores(self, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def select(
        self,
        probabilities: np.ndarray,
        labeled: np.ndarray,
        count: int,
        seed: int | None = None,
        latent: np.ndarray | None = None,
    ) -> np.ndarray:
        """The `count` unlabeled sample indices with the highest scores, best first."""
        import numpy as np

        rng = np.random.default_rng(seed)
        scores = np.asarray(self.scores(probabilities, rng), dtype=np.float64)
        scores = np.where(np.isnan(scores), -np.inf, scores)
        candidates = np.flatnonzero(~labeled)
        if candidates.size == 0 or count <= 0:
            return np.empty(0, dtype=np.int64)
        count = min(count, candidates.size)
        # Ties (e.g. a model with no classifier yet) are broken at random, not by index.
        jitter = rng.random(candidates.size) * 1e-9
        ranked = scores[candidates] + jitter
        top = np.argpartition(-ranked, count - 1)[:count]
        top = top[np.argsort(-ranked[top])]
        return candidates[top].astype(np.int64)
