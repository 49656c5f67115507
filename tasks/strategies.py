"""Built-in query strategies: least confidence, margin, entropy and random."""

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


@hookimpl
def register_strategies(register: Callable[[type], None]) -> None:
    for cls in (LeastConfidence, Margin, Entropy, RandomSampling):
        register(cls)
