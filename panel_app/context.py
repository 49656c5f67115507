"""What all sessions of one app server share: the Lab, caches of loaded data and predictions,
the task-folder watcher and where the MLflow UI lives. One per process (a documented
singleton, set by `activelab serve` or built from the environment under `panel serve`)."""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from activelab.dataset import DataBundle
    from activelab.models import Lab, Model
    from activelab.task_watcher import TaskRegistry

log = logging.getLogger(__name__)


class LruCache:
    """A small thread-safe least-recently-used cache with one loader call per key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Any, threading.Lock] = {}

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Any, load: Any) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # concurrent sessions asking for the same data wait for one load
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = load()
            with self._lock:
                self._items[key] = value
                self._loading.pop(key, None)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return value


class AppContext:
    """Process-wide services for the app."""

    def __init__(self, lab: Lab, mlflow_ui_url: str | None = None) -> None:
        from activelab.connectivity import ServerHealth, fail_fast_http

        fail_fast_http()  # a page waits seconds, not MLflow's silent minutes, on an outage
        self.lab = lab
        self.server_health = ServerHealth(lab.settings.tracking_uri).start()
        # Connect and load plugins now: importing MLflow takes ~3 s, which the first
        # visitor should not wait for.
        _ = lab.tracking, lab.plugins
        self.mlflow_ui_url = mlflow_ui_url
        self.mlflow_ui_ready = mlflow_ui_url is not None and self._probe(mlflow_ui_url)
        self.datasets = LruCache(size=3)
        self.predictions = LruCache(size=16)
        self.registry: TaskRegistry | None = None
        self._lock = threading.Lock()
        # A warm worker forks the app's trainings: each starts in a second (see standby.py).
        from activelab import standby

        standby.ensure(lab.settings.home)
        self._deliver_unsent()
        threading.Thread(target=self._warm_up, name="activelab-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        """Do now what the first visitor would wait for: load the pages' code, and the data set
        and map of the model changed last (the one a person most likely opens next)."""
        import importlib

        started = time.perf_counter()
        try:
            from activelab.panel_app.shell import PAGE_VIEWS  # (pages load on a first visit)
            from activelab.runs import latest_predictions_run

            for module, _view in PAGE_VIEWS.values():
                importlib.import_module(f"activelab.panel_app.pages.{module}")
            cards = self.lab.list_models(sort="updated")
            if not cards:
                return
            model = self.lab.get_model(cards[0].id)
            self.dataset(model)
            run_id = latest_predictions_run(self.lab.tracking, model.id)
            if run_id is not None:
                self.run_predictions(run_id)
                # The first selection shows a reconstruction from the run's weights: torch's
                # import (~2.6 s, mostly holding the GIL) and the checkpoint's read, done
                # then, stalled the first key presses by 130-400 ms.
                self.run_weights(run_id)
        except Exception as exc:  # a visit loads what it needs itself
            log.info("Preloading the latest model for the app skipped: %s", exc)
        finally:
            # What is loaded now (MLflow, Panel, torch: a million objects) lives as long as
            # the app: out of the garbage collector's sight, a full collection (Panel runs
            # one after closed sessions, Python after many allocations) takes ~10 ms, not
            # ~400 ms of CPU that a training run beside the app would rather have.
            gc.freeze()
            log.info("App preload done in %.1f s", time.perf_counter() - started)

    def _deliver_unsent(self) -> None:
        """Send what runs left unsent during an outage (in a thread: it may wait on the server)."""
        from activelab.outbox import deliver_pending

        settings = self.lab.settings

        def deliver() -> None:
            try:
                deliver_pending(settings.home, self.lab.tracking)
            except Exception:  # the next start tries again
                log.warning("Delivering unsent run data failed", exc_info=True)

        threading.Thread(target=deliver, name="activelab-deliver-unsent", daemon=True).start()

    # --- task folders -----------------------------------------------------------------------

    def start_watching(self) -> None:
        """Follow the task folders (hot reload) once per process."""
        from activelab.task_watcher import TaskRegistry

        with self._lock:
            if self.registry is None:
                self.registry = TaskRegistry(self.lab.plugins, self.lab.settings.tasks_dirs).start()

    def stop(self) -> None:
        from activelab import standby

        standby.shutdown()
        self.server_health.stop()
        if self.registry is not None:
            self.registry.stop()
            self.registry = None

    # --- MLflow UI ----------------------------------------------------------------------------

    @staticmethod
    def _probe(url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def watch_mlflow_ui(self, process_ready: Any) -> None:
        """Mark the MLflow UI ready once `process_ready()` is true (polled in a thread)."""

        def poll() -> None:
            import time

            while not self.mlflow_ui_ready:
                if process_ready():
                    self.mlflow_ui_ready = True
                    return
                time.sleep(0.5)

        threading.Thread(target=poll, name="activelab-mlflow-ui", daemon=True).start()

    def experiment_url(self, experiment_id: str) -> str | None:
        if not self.mlflow_ui_url:
            return None
        return f"{self.mlflow_ui_url}/#/experiments/{experiment_id}"

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        if not self.mlflow_ui_url:
            return None
        return f"{self.mlflow_ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    # --- data -------------------------------------------------------------------------------------

    @staticmethod
    def dataset_key(model: Model) -> tuple[str, str]:
        config = model.config
        return config.dataset, json.dumps(config.dataset_params, sort_keys=True)

    def dataset(self, model: Model) -> DataBundle:
        """The model's data set, loaded once per process and shared by sessions."""
        config = model.config
        key = self.dataset_key(model)
        host = self.lab.plugins

        def load() -> DataBundle:
            return host.get("datasets", config.dataset)(**config.dataset_params).load()

        return self.datasets.get(key, load)

    def run_predictions(self, run_id: str) -> pd.DataFrame | None:
        """A run's per-sample predictions artifact (cached per run)."""
        from activelab.runs import read_predictions

        return self.predictions.get(run_id, lambda: read_predictions(self.lab.tracking, run_id))

    def run_weights(self, run_id: str) -> dict[str, Any] | None:
        """The weights of a run's last checkpoint (cached per run): the map's reconstructions."""
        from activelab import keys
        from activelab.runs import read_checkpoint

        def load() -> dict[str, Any] | None:
            path = self.lab.tracking.get_run(run_id).data.tags.get(keys.LAST_CHECKPOINT)
            return read_checkpoint(self.lab.tracking, run_id, path) if path else None

        return self.predictions.get(("weights", run_id), load)


_context: AppContext | None = None
_context_lock = threading.Lock()


def set_context(context: AppContext) -> None:
    global _context
    with _context_lock:
        _context = context


def get_context() -> AppContext:
    """The process's AppContext; under plain `panel serve`, built from the environment."""
    global _context
    with _context_lock:
        if _context is None:
            from activelab.models import Lab

            _context = AppContext(Lab())
        return _context
