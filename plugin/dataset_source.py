"""Where a run's training labels come from, as MLflow shows it: the run's own artifact.

MLflow's dataset sources name a file on the machine that ran the code, or a cloud bucket;
its `runs:/` URIs have no source (MLflow leaves them out on purpose). The labels a run trained
on are its artifact `labels/labels.csv`, so this source names that, and anyone who reaches the
tracking server can read it: `mlflow.data.get_source(dataset_input).load()` downloads it.
Registered with MLflow through the `mlflow.dataset_source` entry point.
"""

from __future__ import annotations

import re
from typing import Any

from mlflow.data.dataset_source import DatasetSource

# runs:/<run id>/<artifact path>, the path relative and without `..`: the URI is read from a
# store, so it must not steer a download outside the run's artifacts
_RUN_ARTIFACT = re.compile(r"^runs:/[0-9a-f]{32}/(?!/)(?!.*(^|/)\.\.(/|$))[\w./ -]+$")


class RunArtifactDatasetSource(DatasetSource):
    """A data set kept as an artifact of an MLflow run (`runs:/<run id>/<path>`)."""

    def __init__(self, uri: str) -> None:
        if not _RUN_ARTIFACT.match(uri):
            raise ValueError(
                f"{uri!r} is not a run artifact URI; expected runs:/<run id>/<relative path>"
            )
        self._uri = uri

    @property
    def uri(self) -> str:
        return self._uri

    @staticmethod
    def _get_source_type() -> str:
        return "mlflow_run_artifact"

    def load(self, dst_path: str | None = None) -> str:
        """Download the file; returns its local path."""
        import mlflow

        return mlflow.artifacts.download_artifacts(artifact_uri=self._uri, dst_path=dst_path)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and bool(_RUN_ARTIFACT.match(raw_source))

    @classmethod
    def _resolve(cls, raw_source: Any) -> RunArtifactDatasetSource:
        return cls(raw_source)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self._uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> RunArtifactDatasetSource:
        return cls(str(source_dict.get("uri", "")))
