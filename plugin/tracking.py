"""Every MLflow call activelab makes goes through this module.

Keeping them in one place gives batching, caching and bulk endpoints one home, and keeps the
rest of the code free of MLflow's client details.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from activelab import keys
from activelab.ended_histories import EndedRunHistories
from activelab.errors import ModelExistsError, StorageError
from activelab.metric_sampling import sample_evenly

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mlflow.entities import Experiment, Run

    from activelab.settings import Settings

# search_experiments pages; MLflow caps a page at 1,000 results for most stores
PAGE_SIZE = 1000
# Metric histories for plots: points per curve, and the server's own cap per request.
HISTORY_POINTS = 1000
SERVER_MAX_POINTS = 2500  # MLflow's MAX_RESULTS_PER_RUN
HISTORY_ENDPOINT = "/api/2.0/mlflow/metrics/get-history-bulk-interval"
TEMP_PREFIX = ".tmp-"  # a local write in progress (or left by a killed writer)
BULK_RUNS = 100  # the server's MAX_RUNS_GET_METRIC_HISTORY_BULK
HISTORY_THREADS = 8
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit of params in one log_batch


@dataclass
class MetricSeries:
    """One metric's (downsampled) history: steps, values and timestamps (epoch ms)."""

    key: str
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)


def _mlflow_exception_code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


class Tracking:
    """A thin wrapper over `MlflowClient` for one tracking store."""

    def __init__(self, settings: Settings) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        self.uri = settings.tracking_uri
        self._client = MlflowClient(tracking_uri=self.uri)
        self._history_pool: ThreadPoolExecutor | None = None
        self.ended_histories = EndedRunHistories()

    # --- experiments (models) ----------------------------------------------------------------

    def create_experiment(self, name: str, tags: dict[str, str]) -> str:
        from mlflow.exceptions import MlflowException

        location = None
        if self.settings.artifact_root:
            location = _join_uri(self.settings.artifact_root, uuid.uuid4().hex)
        try:
            return self._client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException as exc:
            if _mlflow_exception_code(exc) == "RESOURCE_ALREADY_EXISTS":
                raise ModelExistsError(
                    f"The name {name!r} is taken by another model or MLflow experiment; "
                    "choose another name."
                ) from None
            raise

    def get_experiment(self, experiment_id: str) -> Experiment | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_experiment(experiment_id)
        except MlflowException as exc:
            if _mlflow_exception_code(exc) in (
                "RESOURCE_DOES_NOT_EXIST",
                "INVALID_PARAMETER_VALUE",
            ):
                return None
            raise

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        return self._client.get_experiment_by_name(name)

    def search_experiments(
        self, filter_string: str, deleted: bool = False, order_by: list[str] | None = None
    ) -> list[Experiment]:
        """Every matching experiment, following pages (one call per 1,000 experiments)."""
        from mlflow.entities import ViewType

        view = ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY
        found: list[Experiment] = []
        token = None
        while True:
            page = self._client.search_experiments(
                view_type=view,
                max_results=PAGE_SIZE,
                filter_string=filter_string,
                order_by=order_by,
                page_token=token,
            )
            found.extend(page)
            token = page.token
            if not token:
                return found

    def experiment_names_like(self, pattern: str) -> list[str]:
        """Names of all experiments (active and deleted) matching a SQL LIKE pattern."""
        from mlflow.entities import ViewType

        names: list[str] = []
        token = None
        while True:
            page = self._client.search_experiments(
                view_type=ViewType.ALL,
                max_results=PAGE_SIZE,
                filter_string=f"name LIKE '{pattern}'",
                page_token=token,
            )
            names.extend(e.name for e in page)
            token = page.token
            if not token:
                return names

    def set_experiment_tags(self, experiment_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_experiment_tag(experiment_id, key, value)

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        self._client.delete_experiment_tag(experiment_id, key)

    def rename_experiment(self, experiment_id: str, name: str) -> None:
        from mlflow.exceptions import MlflowException

        taken = ModelExistsError(
            f"The name {name!r} is taken by another model or MLflow experiment; "
            "choose another name."
        )
        existing = self._client.get_experiment_by_name(name)
        if existing is not None and existing.experiment_id != experiment_id:
            raise taken
        try:
            self._client.rename_experiment(experiment_id, name)
        except MlflowException as exc:
            text = str(exc)
            if _mlflow_exception_code(exc) == "RESOURCE_ALREADY_EXISTS" or (
                "already exists" in text or "UNIQUE constraint" in text
            ):
                raise taken from None
            raise

    def delete_experiment(self, experiment_id: str) -> None:
        self._client.delete_experiment(experiment_id)

    def restore_experiment(self, experiment_id: str) -> None:
        self._client.restore_experiment(experiment_id)

    # --- runs ---------------------------------------------------------------------------------

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> Run:
        return self._client.create_run(experiment_id, run_name=name, tags=tags)

    def get_run(self, run_id: str) -> Run:
        return self._client.get_run(run_id)

    def search_runs(
        self, experiment_ids: list[str], filter_string: str, order_by: list[str], max_results: int
    ) -> list[Run]:
        return list(
            self._client.search_runs(
                experiment_ids=experiment_ids,
                filter_string=filter_string,
                order_by=order_by,
                max_results=max_results,
            )
        )

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_tag(run_id, key, value)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        """In batches of MLflow's limit per request."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

    def end_run(self, run_id: str, status: str, end_time: int | None = None) -> None:
        self._client.set_terminated(run_id, status, end_time)

    def delete_run_tag(self, run_id: str, key: str) -> None:
        self._client.delete_tag(run_id, key)

    def delete_run_tags(
        self, run_id: str, wanted: Sequence[str], present: Mapping[str, str]
    ) -> None:
        """Delete those of `wanted` that are among the run's tags `present` (MLflow refuses
        to delete a tag the run lacks)."""
        for key in wanted:
            if key in present:
                self._client.delete_tag(run_id, key)

    def create_logged_model(
        self, run_id: str, name: str, params: dict[str, str], tags: dict[str, str]
    ) -> str:
        """A PENDING logged model of `run_id`, in its experiment, with the run's params and
        MLflow's context tags (as `log_model` in a run makes one); its id."""
        from mlflow.tracking.context import registry

        run = self._client.get_run(run_id)
        created = self._client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=run_id,
            params={**params, **run.data.params}, tags=registry.resolve_tags(tags),
        )  # fmt: skip
        return str(created.model_id)

    def logged_models_of_run(self, experiment_id: str, run_id: str) -> list[Any]:
        """The logged models `run_id` made (MLflow `LoggedModel`s), newest first."""
        found = self._client.search_logged_models(
            experiment_ids=[experiment_id],
            filter_string=f"source_run_id = '{run_id}'",
            order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        )
        return list(found)

    def register_logged_model(self, name: str, model_id: str, run_id: str, note: str) -> str:
        """A new version of the registered model `name` (made if missing) from the logged
        model `model_id`; its version number."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(name)
        except MlflowException as exc:
            if _mlflow_exception_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"models:/{model_id}"
        if not self.uri.startswith(("http://", "https://")):
            # A database store resolves models:/ with a client of the *global* tracking URI
            # (MLflow's own TODO in its sqlalchemy registry store), not this store's: give it
            # the logged model's location. A server resolves it against its own store.
            source = self._client.get_logged_model(model_id).artifact_location
        version = self._client.create_model_version(
            name, source=source, run_id=run_id, model_id=model_id, description=note
        )
        return str(version.version)

    def set_registered_alias(self, name: str, alias: str, version: str) -> None:
        self._client.set_registered_model_alias(name, alias, version)

    def registered_version_status(self, name: str, version: str) -> str:
        return str(self._client.get_model_version(name, version).status)

    def log_batch(self, run_id: str, metrics: Sequence[Any] = (), tags: Sequence[Any] = ()) -> None:
        """One request of MLflow `Metric`s and `RunTag`s (callers keep to MLflow's limits)."""
        self._client.log_batch(run_id, metrics=list(metrics), tags=list(tags))

    def log_artifact(self, run_id: str, local_path: str | Path, folder: str | None) -> None:
        self._client.log_artifact(run_id, str(local_path), folder)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._client.log_text(run_id, text, artifact_file)

    def log_image_file(self, run_id: str, image: Any, artifact_file: str) -> None:
        """An image array as one artifact file (e.g. an analyzer's picture)."""
        self._client.log_image(run_id, image, artifact_file=artifact_file)

    def log_image_step(self, run_id: str, image: Any, key: str, step: int, timestamp: int) -> None:
        """An image of a series the MLflow UI shows with a step slider."""
        self._client.log_image(
            run_id, image, key=key, step=step, timestamp=timestamp, synchronous=True
        )

    def ping(self) -> None:
        """One cheap request: raises if the store does not answer."""
        self._client.search_experiments(max_results=1)

    def list_run_artifacts(self, run_id: str, folder: str) -> list[str]:
        """Paths of the files directly under a run's artifact `folder`."""
        return [info.path for info in self._client.list_artifacts(run_id, folder)]

    def download_run_artifact(self, run_id: str, path: str, folder: str) -> Path:
        """One artifact of a run, copied into the local `folder`; its local path."""
        return Path(self._client.download_artifacts(run_id, path, folder))

    # --- metric histories ------------------------------------------------------------------------

    def metric_history(
        self,
        run_id: str,
        key: str,
        max_points: int = HISTORY_POINTS,
        start_step: int | None = None,
    ) -> MetricSeries:
        """One metric of one run, evenly downsampled to at most `max_points` (first and last
        kept), from `start_step` on."""
        return self.metric_histories([run_id], key, max_points, start_step)[run_id]

    def metric_histories_many(
        self,
        run_ids: list[str],
        keys: list[str],
        max_points: int = HISTORY_POINTS,
        start_steps: dict[str, int | None] | None = None,
        runs: dict[str, Any] | None = None,
    ) -> dict[str, dict[str, MetricSeries]]:
        """{key: {run_id: series}} for several metrics, read concurrently: each read is a
        scan in the store or a round trip to the server, and they overlap well (10 runs x
        5 metrics: 2.5 s one after another, ~1.1 s in parallel on sqlite, measured here).

        Curves of the ended runs among `runs` (run_id -> MLflow Run, as just read) are read
        once per process and then served from memory (`ended_histories`)."""
        starts = start_steps or {}
        known = runs or {}

        def read(key: str) -> dict[str, MetricSeries]:
            memo = {r: EndedRunHistories.key(known[r], key, max_points, starts.get(key))
                    for r in run_ids if r in known}  # fmt: skip
            found = {r: self.ended_histories.get(memo.get(r)) for r in run_ids}
            missing = [r for r, series in found.items() if series is None]
            if missing:
                fresh = self.metric_histories(missing, key, max_points, starts.get(key))
                for run_id, series in fresh.items():
                    self.ended_histories.put(memo.get(run_id), series)
                found.update(fresh)
            return found  # type: ignore[return-value]

        if len(keys) <= 1:
            return {k: read(k) for k in keys}
        if self._history_pool is None:  # one pool per store, reused by every poll
            self._history_pool = ThreadPoolExecutor(
                HISTORY_THREADS, thread_name_prefix="activelab-history"
            )
        return dict(zip(keys, self._history_pool.map(read, keys), strict=True))

    def metric_histories(
        self,
        run_ids: list[str],
        key: str,
        max_points: int = HISTORY_POINTS,
        start_step: int | None = None,
    ) -> dict[str, MetricSeries]:
        """One metric of several runs, each downsampled store-side to at most `max_points`:
        one bulk call per 100 runs instead of reading every point (~0.5 s per 10k points on
        sqlite, ~3 s over HTTP; DESIGN.md)."""
        end_step = None if start_step is None else 2**62
        store = self._client._tracking_client.store
        points: dict[str, list[tuple[int, float, int]]] = {run_id: [] for run_id in run_ids}
        for first in range(0, len(run_ids), BULK_RUNS):
            chunk = run_ids[first : first + BULK_RUNS]
            if hasattr(store, "get_host_creds"):  # a tracking server: its bulk endpoint
                from mlflow.utils.rest_utils import http_request

                params: dict[str, Any] = {
                    "run_ids": chunk,
                    "metric_key": key,
                    "max_results": min(max_points, SERVER_MAX_POINTS),
                }
                if start_step is not None:
                    params.update(start_step=start_step, end_step=end_step)
                response = http_request(
                    store.get_host_creds(), HISTORY_ENDPOINT, "GET", params=params
                )
                response.raise_for_status()
                for m in response.json().get("metrics", []):
                    points[m["run_id"]].append(
                        (int(m.get("step", 0)), float(m["value"]), int(m.get("timestamp", 0)))
                    )
            elif hasattr(store, "get_metric_history_bulk_interval"):
                rest = []
                for run_id in chunk:
                    sampled = sample_evenly(store, run_id, key, max_points, start_step, end_step)
                    if sampled is None:
                        rest.append(run_id)
                    else:
                        points[run_id] = sampled
                found = store.get_metric_history_bulk_interval(
                    rest, key, max_points, start_step, end_step
                ) if rest else []  # fmt: skip
                for m in found:
                    points[m.run_id].append((m.step, m.value, m.timestamp))
            else:  # pragma: no cover - a store without sampling: read everything
                for run_id in chunk:
                    points[run_id] = [
                        (m.step, m.value, m.timestamp)
                        for m in self._client.get_metric_history(run_id, key)
                        if start_step is None or m.step >= start_step
                    ]
        result = {}
        for run_id, found in points.items():
            found.sort()
            result[run_id] = MetricSeries(
                key, [p[0] for p in found], [p[1] for p in found], [p[2] for p in found]
            )
        return result

    # --- experiment-level artifacts ---------------------------------------------------------------

    def folder(self, experiment: Experiment) -> ArtifactFolder:
        return ArtifactFolder(experiment.artifact_location, self.uri)


def _join_uri(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(uri))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


class ArtifactFolder:
    """Files under one artifact URI (an experiment's), on disk or behind an artifact repository.

    Local folders get atomic writes (temp file, fsync, rename). Remote stores get one upload
    per file; readers treat a file that does not parse yet as not there yet.
    """

    def __init__(self, artifact_uri: str, tracking_uri: str) -> None:
        self.uri = artifact_uri
        self.local = _local_path(artifact_uri)
        self._repo: Any = None
        self._tracking_uri = tracking_uri

    @property
    def repo(self) -> Any:
        if self._repo is None:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            self._repo = get_artifact_repository(self.uri, tracking_uri=self._tracking_uri)
        return self._repo

    def list(self, subdir: str) -> list[str]:
        """Names of the files directly under `subdir` (empty if it does not exist)."""
        if self.local is not None:
            try:
                with os.scandir(self.local / subdir) as entries:
                    return [e.name for e in entries if e.is_file() and not e.name.startswith(".")]
            except FileNotFoundError:
                return []
        try:
            infos = self.repo.list_artifacts(subdir)
        except Exception as exc:  # a missing folder is an error on some stores
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                return []
            raise
        return [Path(info.path).name for info in infos if not info.is_dir]

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        if self.local is not None:
            try:
                return (self.local / path).read_bytes()
            except FileNotFoundError:
                return None
        with tempfile.TemporaryDirectory(prefix="activelab-") as tmp:
            local = Path(tmp) / Path(path).name
            try:
                # One GET per file; the public download_artifacts first lists the path to
                # tell files from folders (a second round trip) and draws a progress bar.
                self.repo._download_file(path, str(local))
            except Exception as exc:
                text = str(exc).lower()
                if "not found" in text or "does not exist" in text or "404" in text:
                    return None
                raise
            return local.read_bytes()

    @staticmethod
    def _write_local(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def sweep_temp_files(self, subdir: str, older_than_s: float = 600.0) -> int:
        """Delete temp files a killed writer left under `subdir` (local folders only)."""
        if self.local is None:
            return 0
        cutoff, removed = time.time() - older_than_s, 0
        try:
            with os.scandir(self.local / subdir) as entries:
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX) and entry.stat().st_mtime < cutoff:
                        Path(entry.path).unlink(missing_ok=True)
                        removed += 1
        except FileNotFoundError:
            pass
        return removed

    def read_many(self, paths: Sequence[str], workers: int = 8) -> dict[str, bytes | None]:
        """Several files at once; remote reads run in parallel."""
        if self.local is not None or len(paths) <= 1:
            return {p: self.read(p) for p in paths}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(paths, pool.map(self.read, paths), strict=True))

    def write(self, path: str, data: bytes) -> None:
        """Write `data` to `path`; on disk the file appears whole or not at all."""
        if self.local is not None:
            try:
                self._write_local(self.local / path, data)
            except OSError as exc:
                raise StorageError(
                    f"Could not write to {self.local} ({exc.strerror or exc}); nothing was "
                    "changed. Make the folder writable or free disk space, then try again."
                ) from None
            return
        subdir, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="activelab-") as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self.repo.log_artifact(str(local), artifact_path=subdir or None)


def is_activelab_model(experiment: Experiment) -> bool:
    return experiment.tags.get(keys.MODEL_MARKER) == "1"
