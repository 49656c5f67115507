"""Trainers turn a model's config, data and labels into a trained network, logged to MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from activelab.component import Component

if TYPE_CHECKING:
    from activelab.runtime import TrainingSession


class Trainer(Component):
    """A trainer plugin. Subclasses set `kind`, declare their parameters and implement `fit`.

    `fit` runs the loop and reports through the session: metrics, checkpoints, images,
    predictions and the final model. It returns when done or when `session.stop_requested`.
    """

    def fit(self, session: TrainingSession) -> None:
        raise NotImplementedError
