"""Label: every sample in the model's latent space; label by click, selection and keys."""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import param

from activelab import keys
from activelab.errors import ModelNotFoundError
from activelab.panel_app.vm.loaded import LoadedModel
from activelab.runs import features_of, get_run, probabilities_of
from activelab.runtime import build_tasks, build_trainer

if TYPE_CHECKING:
    import pandas as pd

    from activelab.dataset import DataBundle
    from activelab.models import Lab, Model
    from activelab.panel_app.vm.state import AppState

log = logging.getLogger(__name__)

COLOR_MODES = {
    "label": "Your labels",
    "predicted": "Predicted class",
    "certainty": "Certainty",
    "true": "True class",
}
UNLABELED = -1
GALLERY_ORDERS = {
    "picked": "as picked",
    "least_certain": "least certain first",
    "most_certain": "most certain first",
}
GALLERY_MAX = 40  # thumbnails shown of a selection (the keys still label all of it)


def latest_predictions_run(model: Model) -> str | None:
    """The newest finished or stopped training run of `model` that logged predictions."""
    from activelab.runs import latest_predictions_run as latest

    return latest(model.lab.tracking, model.id)


# the map helps labeling when most labeled samples lie beside their own class and the model is
# reasonably sure of the rest; below these the Label page says what to do next
SEPARATED = 0.8
UNSURE = 0.5
MIN_LABELED_TO_JUDGE = 10


class LabelViewModel(LoadedModel, param.Parameterized):
    model_id = param.String(default="")
    status = param.String(default="", doc="What the page is doing, for people.")
    ready = param.Boolean(default=False)
    color_by: param.Selector[str] = param.Selector(default="label", objects=list(COLOR_MODES))
    selected = param.List(default=[], item_type=int, doc="Selected sample indices.")
    current = param.Integer(default=None, allow_None=True, doc="The sample shown in detail.")
    strategy: param.Selector[str] = param.Selector(default="auto", objects=["auto"])
    next_count = param.Integer(default=10, bounds=(1, 1000))
    map_version = param.Integer(default=0, doc="Grows when the whole map is replaced.")
    labels_version = param.Integer(default=0, doc="Grows with every label change.")
    last_change = param.Dict(default={}, doc="{index: new label (-1 = none)} of the last change.")
    source_run = param.String(
        default="", doc="Run whose predictions the map shows ('' = untrained)."
    )
    source_run_name = param.String(default="", doc="That run's name (what people call it).")
    can_undo = param.Boolean(default=False)
    can_redo = param.Boolean(default=False)
    gallery_order: param.Selector[str] = param.Selector(
        default="picked", objects=list(GALLERY_ORDERS), doc="How the selection's thumbnails sort."
    )
    queue = param.List(default=[], item_type=int, doc="Samples to label one at a time, in order.")
    queue_position = param.Integer(default=0, doc="Where in `queue` the person is.")

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.data: DataBundle | None = None
        self.frame: pd.DataFrame | None = None
        self.labels = np.empty(0, dtype=np.int64)
        self._lock = threading.RLock()
        strategies = sorted(self.lab.plugins.registry("strategies"))
        if strategies:
            self.param.strategy.objects = strategies
            if self.strategy not in strategies:  # "auto" unless a block-list removed it
                self.strategy = strategies[0]

    @property
    def lab(self) -> Lab:
        return self.state.lab

    def _loaded(self) -> tuple[pd.DataFrame, DataBundle]:
        """The map's predictions and the data set, once `load` has read them."""
        if self.frame is None or self.data is None:
            raise ModelNotFoundError("No map is loaded yet: pick a model to label.")
        return self.frame, self.data

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.dataset_info.classes if self.model is not None else ()

    # --- loading ------------------------------------------------------------------------------

    def is_warm(self, model_id: str) -> bool:
        """True if loading `model_id` needs no slow work (its data and map are cached)."""
        context = self.state.context
        model = self.lab.get_model(model_id)
        if context.dataset_key(model) not in context.datasets:
            return False
        run_id = latest_predictions_run(model)
        if run_id is not None:
            return run_id in context.predictions
        return self._untrained_key(model) in context.predictions

    def load(self, model_id: str) -> None:
        """Data, predictions and labels of a model (slow unless `is_warm`: use a thread)."""
        with self._lock:
            self.param.update(ready=False, status="Loading the model…", model_id=model_id)
            model = self.lab.get_model(model_id)
            model.deferred_card = True  # a key press waits for the label, not the card
            self.model = model
            self.status = "Loading the data set…"
            self.data = self.state.context.dataset(model)
            self.status = "Reading the latest predictions…"
            run_id = latest_predictions_run(model)
            frame = self.state.context.run_predictions(run_id) if run_id else None
            if frame is None:
                self.status = "No training yet: placing samples with the untrained model…"
                frame = self._untrained_predictions(model)
                run_id = None
            self.frame = frame
            self.labels = model.labels.as_array()
            self._after_label_change()
            self.param.update(
                source_run=run_id or "",
                source_run_name=self._name_of(run_id),
                selected=[],
                current=None,
                map_version=self.map_version + 1,
                ready=True,
                status="",
            )

    @staticmethod
    def _untrained_key(model: Model) -> tuple[str, str, str]:
        return ("untrained", model.id, model.config.to_json())

    def _untrained_predictions(self, model: Model) -> pd.DataFrame:
        key = self._untrained_key(model)

        def compute() -> pd.DataFrame:
            return model.untrained_predictions(self.data)

        return self.state.context.predictions.get(key, compute)

    # --- what the plot shows ------------------------------------------------------------------

    def columns(self) -> dict[str, np.ndarray]:
        """Compact columns for the scatter: float32 coordinates, int8 classes."""
        frame, data = self._loaded()
        n = len(self.labels)
        x = frame["z0"].to_numpy(np.float32)
        y = frame["z1"].to_numpy(np.float32) if "z1" in frame else np.zeros(n, np.float32)
        truth = data.true_labels
        # int8 classes keep 60,000 points small on the wire (DESIGN: 0.64 MB, 0.13 s)
        classes = np.int8 if len(self.classes) < 127 else np.int16
        return {
            "x": x,
            "y": y,
            "label": self.labels.astype(classes),
            "predicted": frame["predicted"].to_numpy(classes),
            "certainty": frame["certainty"].to_numpy(np.float32),
            "true": truth.astype(classes) if truth is not None else np.full(n, -1, classes),
        }

    def map_advice(self) -> str:
        """What to do next when the map does not help labeling yet ("" when it does): the
        untrained model's map, or a trained map that mixes the labeled classes (fewer than
        SEPARATED of the labeled samples lie beside one of their own class) or is unsure."""
        if not self.ready:
            return ""
        frame, _ = self._loaded()
        if not self.source_run:
            return (
                "This map is the untrained model's: label a few samples of each class "
                "(Next to label picks typical ones), then train for a map that groups them."
            )
        labeled = np.flatnonzero(self.labels >= 0)
        if len(labeled) < MIN_LABELED_TO_JUDGE or len(set(self.labels[labeled])) < 2:
            return ""
        points = frame[["z0", "z1"]].to_numpy(np.float64)[labeled]
        from sklearn.neighbors import NearestNeighbors

        nearest = NearestNeighbors(n_neighbors=2).fit(points).kneighbors(points)[1][:, 1]
        separated = float((self.labels[labeled][nearest] == self.labels[labeled]).mean())
        unlabeled = self.labels < 0
        certainty = frame["certainty"].to_numpy()[unlabeled]
        sure = float(np.nanmedian(certainty)) if unlabeled.any() else 1.0
        if separated >= SEPARATED and sure >= UNSURE:
            return ""
        return (
            f"The map does not separate your classes yet: {separated:.0%} of the labeled "
            f"samples lie beside one of their own class, and the model's median certainty is "
            f"{sure:.2f}. Label more where Next to label points, train longer (Train page), "
            "or, for photos, learn on pretrained features (trainer.features)."
        )

    @property
    def has_truth(self) -> bool:
        return self.data is not None and self.data.true_labels is not None

    @property
    def latent(self) -> np.ndarray:
        """(N, D) latent of every sample (what strategies measure distances in), as the
        map's predictions hold it."""
        return features_of(self._loaded()[0])

    @property
    def probabilities(self) -> np.ndarray:
        return probabilities_of(self._loaded()[0], len(self.classes))

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return {name: int(counts[i]) for i, name in enumerate(self.classes)}

    def gallery(self) -> list[dict[str, Any]]:
        """The selection's samples for thumbnails (index, predicted class, certainty), in
        `gallery_order`, at most GALLERY_MAX."""
        frame, _data = self._loaded()
        picked = list(self.selected)
        certainty = frame["certainty"].to_numpy()[picked] if picked else np.array([])
        if self.gallery_order != "picked" and picked:
            known = np.nan_to_num(certainty, nan=-1.0)
            order = np.argsort(known, kind="stable")
            if self.gallery_order == "most_certain":
                order = order[::-1]
            picked = [picked[i] for i in order]
        return [self.describe(index) for index in picked[:GALLERY_MAX]]

    def describe(self, index: int) -> dict[str, Any]:
        """What the detail panel shows for one sample."""
        frame, data = self._loaded()
        row = frame.iloc[index]
        predicted = int(row["predicted"])
        label = int(self.labels[index])
        truth = int(data.true_labels[index]) if data.true_labels is not None else None
        return {
            "index": index,
            "label": self.classes[label] if label >= 0 else None,
            "predicted": self.classes[predicted] if predicted >= 0 else None,
            "certainty": None if np.isnan(row["certainty"]) else float(row["certainty"]),
            "true": self.classes[truth] if truth is not None else None,
        }

    def image(self, index: int) -> np.ndarray:
        """The sample's image (C, H, W in [0, 1])."""
        return self._loaded()[1].images[index]

    def images(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The sample's image and its reconstruction by the map's model (C, H, W in [0, 1])."""
        data = self._loaded()[1]
        original = data.images[index]
        try:
            config = self.model.config
            trainer = build_trainer(config, self.lab.plugins)
            state = self._source_weights()
            tasks = build_tasks(config, self.lab.plugins)
            return original, trainer.reconstruct(data, tasks, state, [index])[0]
        except Exception:
            log.warning("No reconstruction for sample %d", index, exc_info=True)
            return original, None

    def _source_weights(self) -> dict[str, Any] | None:
        if not self.source_run:
            return None
        return self.state.context.run_weights(self.source_run)

    # --- labeling -----------------------------------------------------------------------------

    def label(self, indices: list[int], label: Any) -> int:
        """Give `label` (class index or name) to samples; returns how many changed."""
        with self._lock:
            event = self.model.labels.set_many(indices, label)
            return self._apply(event)

    def label_selection(self, label: Any) -> int:
        targets = self.selected or ([self.current] if self.current is not None else [])
        if not targets:
            return 0
        return self.label(targets, label)

    def clear_selection(self) -> int:
        targets = self.selected or ([self.current] if self.current is not None else [])
        if not targets:
            return 0
        with self._lock:
            return self._apply(self.model.labels.clear(targets))

    def undo(self) -> int:
        with self._lock:
            return self._apply(self.model.labels.undo())

    def labels_csv(self) -> str:
        """Every label as CSV lines, as `activelab labels export` writes them (with each
        sample's file for an image folder)."""
        return self.model.labels_csv() if self.model is not None else ""

    def import_csv(self, text: str) -> int:
        """Apply a labels CSV as one change (undo reverts all of it); a bad line changes
        nothing and says which line."""
        if not self.has_model:
            return 0
        with self._lock:
            return self._apply(self.model.import_labels_csv(text))

    def redo(self) -> int:
        with self._lock:
            return self._apply(self.model.labels.redo())

    def _apply(self, event: Any) -> int:
        if event is None:
            return 0
        change = {
            i: (new if new is not None else UNLABELED) for i, (_old, new) in event.changes.items()
        }
        self._publish(change)
        return len(change)

    def _publish(self, change: dict[int, int]) -> None:
        for index, value in change.items():
            self.labels[index] = value
        self._after_label_change()
        self.param.update(last_change=change, labels_version=self.labels_version + 1)

    def _after_label_change(self) -> None:
        store = self.model.labels
        self.param.update(can_undo=store.can_undo, can_redo=store.can_redo)

    def refresh_labels(self) -> bool:
        """Pick up label changes made elsewhere (another session, the CLI)."""
        with self._lock:
            if not self.has_model or not self.ready or not self.model.labels.refresh():
                return False
            fresh = self.model.labels.as_array()
            changed = np.flatnonzero(fresh != self.labels)
            if len(changed) == 0:
                self._after_label_change()
                return False
            self._publish({int(i): int(fresh[i]) for i in changed})
            return True

    # --- the queue: one sample at a time ------------------------------------------------------

    @property
    def in_queue(self) -> bool:
        return bool(self.queue)

    @property
    def queue_done(self) -> bool:
        return self.in_queue and self.queue_position >= len(self.queue)

    def start_queue(self) -> list[int]:
        """Queue the `next_count` samples the strategy ranks highest, and show the first."""
        picked = self.next_to_label()
        self.param.update(queue=picked, queue_position=0)
        self._show_queue_position()
        return picked

    def stop_queue(self) -> None:
        self.param.update(queue=[], queue_position=0, selected=[], current=None)

    def label_in_queue(self, label: Any) -> int:
        """Label the queue's current sample and move on to the next (auto-advance)."""
        if not self.in_queue or self.queue_done:
            return 0
        changed = self.label([self.queue[self.queue_position]], label)
        self.move_in_queue(1)
        return changed

    def undo_in_queue(self) -> int:
        """Undo the latest change and step back to the sample it labeled."""
        changed = self.undo()
        self.move_in_queue(-1)
        return changed

    def move_in_queue(self, step: int) -> None:
        """Skip ahead (1) or go back (-1) without labeling."""
        position = min(max(self.queue_position + step, 0), len(self.queue))
        self.queue_position = position
        self._show_queue_position()

    def _show_queue_position(self) -> None:
        done = self.queue_position >= len(self.queue)
        current = None if done else self.queue[self.queue_position]
        self.param.update(selected=[] if current is None else [current], current=current)

    def next_to_label(self) -> list[int]:
        """Select the unlabeled samples the chosen strategy ranks highest."""
        strategy = self.lab.plugins.get("strategies", self.strategy)()
        chosen = strategy.select(
            self.probabilities, self.labels >= 0, self.next_count, seed=None, latent=self.latent
        )
        picked = [int(i) for i in chosen]
        self.param.update(selected=picked, current=picked[0] if picked else None)
        return picked

    # --- following training -------------------------------------------------------------------

    def check_for_new_run(self) -> bool:
        """Reload the map if a newer run with predictions finished; True if it did."""
        with self._lock:
            if not self.has_model or not self.ready:
                return False
            self.model.refresh()
            tags = self.model.experiment.tags
            latest, status = tags.get(keys.LATEST_RUN), tags.get(keys.LATEST_RUN_STATUS)
            if not latest or latest == self.source_run or status not in ("FINISHED", "KILLED"):
                return False
            frame = self.state.context.run_predictions(latest)
            if frame is None or len(frame) != len(self.labels):
                return False
            self.frame = frame
            self.param.update(
                source_run=latest,
                source_run_name=self._name_of(latest),
                map_version=self.map_version + 1,
            )
            return True

    def _name_of(self, run_id: str | None) -> str:
        if not run_id:
            return ""
        return get_run(self.lab.tracking, run_id).info.run_name or run_id[:8]

    def stats_json(self) -> str:
        return json.dumps(self.label_counts())
