"""MLflow-side integration: a run context provider (entry point `mlflow.run_context_provider`).

Runs started with fluent `mlflow.start_run` inside an activelab model's experiment are stamped
with the activelab version and the digest of the model's current labels, so hand-written
training scripts stay traceable to the label set they saw.
"""

from __future__ import annotations

import logging

from mlflow.tracking.context.abstract_context import RunContextProvider

from activelab import keys

log = logging.getLogger(__name__)


def _active_model_experiment():
    """The experiment `start_run` will use, if it is an activelab model; else None."""
    import mlflow
    from mlflow.tracking.fluent import _get_experiment_id

    experiment_id = _get_experiment_id()
    if not experiment_id:
        return None
    experiment = mlflow.MlflowClient().get_experiment(experiment_id)
    if experiment is None or experiment.tags.get(keys.MODEL_MARKER) != "1":
        return None
    return experiment


class ActivelabRunContextProvider(RunContextProvider):
    """Adds `activelab.version`, `activelab.labels_digest` and `activelab.labeled_count`."""

    def in_context(self) -> bool:
        try:
            return _active_model_experiment() is not None
        except Exception:  # never break a user's start_run
            return False

    def tags(self) -> dict[str, str]:
        try:
            import mlflow

            from activelab.models import Lab
            from activelab.version import __version__

            experiment = _active_model_experiment()
            if experiment is None:
                return {}
            lab = Lab(tracking_uri=mlflow.get_tracking_uri())
            store = lab.get_model(experiment.experiment_id).labels
            return {
                keys.RUN_VERSION: __version__,
                keys.LABELS_DIGEST: store.digest(),
                keys.RUN_LABELED_COUNT: str(store.count),
            }
        except Exception:
            log.debug("activelab run context not added", exc_info=True)
            return {}
