"""Trainers turn a model's config, data and labels into a trained network, logged to MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from activelab.component import Component

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from activelab.dataset import DataBundle, DatasetInfo
    from activelab.runtime import TrainingSession
    from activelab.task import Task


class Trainer(Component):
    """A trainer plugin. Subclasses set `kind`, declare their parameters and implement `fit`.

    `fit` runs the loop and reports through the session: metrics, checkpoints, images,
    predictions and the final model. It sums each step's task terms with
    `session.total_loss`, which refuses a non-finite total. It returns when done or when
    `session.stop_requested`.
    """

    # Parameters that change the shape of the weights: a run cannot continue a checkpoint
    # made with other values, so a launch that tries is refused before the run exists.
    architecture_params: ClassVar[tuple[str, ...]] = ()

    def default_epochs(self, info: DatasetInfo, resuming: bool) -> int:
        """Epochs of a run whose launch names none (`resuming`: it continues a checkpoint)."""
        return int(getattr(self, "epochs", 10) or 10)

    def fit(self, session: TrainingSession) -> None:
        raise NotImplementedError

    # Optional: the app's labeling map uses these when a trainer provides them.

    def predictions(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Per-sample `z0..`, `predicted`, `certainty`, `p0..` from weights `state` (a
        checkpoint), or from the untrained model when None."""
        raise NotImplementedError(f"Trainer {self.kind!r} cannot compute predictions.")

    def evaluate_state(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None, labels: np.ndarray
    ) -> dict[str, float]:
        """Validation losses (`val/loss/<term>`) and task metrics (`eval/<task>/<metric>`) of
        the weights `state` (a checkpoint)."""
        raise NotImplementedError(f"Trainer {self.kind!r} cannot evaluate a checkpoint.")

    def reconstruct(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None, indices: list[int]
    ) -> np.ndarray:
        """Reconstructions (N, C, H, W) in [0, 1] of the samples `indices`."""
        raise NotImplementedError(f"Trainer {self.kind!r} cannot reconstruct samples.")
