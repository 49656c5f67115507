"""Data sets, query strategies and third-party trainers, through their hooks."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from helpers import FAST

from activelab import DataBundle, Dataset, DatasetInfo, QueryStrategy, Trainer, hookimpl
from activelab.errors import DatasetUnavailableError, InvalidConfigError, InvalidLabelError


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    """Write an IDX file (the MNIST format torchvision reads)."""
    dtype_code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, dtype_code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(f"{path}.gz", "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(root, folder: str, train: int = 30, test: int = 12):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        raw = root / folder / "raw"
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)


@pytest.mark.parametrize(
    ("kind", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_torchvision_loaders_read_generated_files(tmp_path, kind, folder):
    from activelab.plugins import get_plugins

    fake_mnist(tmp_path, folder)
    cls = get_plugins().get("datasets", kind)
    data = cls(root=str(tmp_path), download=False).load()
    assert data.images.shape == (30, 1, 28, 28) and data.images.dtype == np.float32
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert list(data.true_labels[:12]) == [*range(10), 0, 1]
    info = cls(root=str(tmp_path), split="test").info()
    assert (info.size, info.num_classes, info.image_shape) == (12, 10, (1, 28, 28))
    assert cls(root=str(tmp_path), split="test", download=False).load().images.shape[0] == 12


def test_missing_files_that_cannot_be_downloaded_say_what_to_do(tmp_path):
    from activelab.plugins import get_plugins

    cls = get_plugins().get("datasets", "mnist")
    with pytest.raises(DatasetUnavailableError, match="could not be downloaded.*digits"):
        cls(root=str(tmp_path), download=False).load()


def test_a_model_on_generated_mnist_trains(local_lab, unique, tmp_path):
    fake_mnist(tmp_path / "data", "MNIST", train=64)
    model = local_lab.create_model(
        unique,
        dataset="mnist",
        config={**FAST, "dataset.root": str(tmp_path / "data"), "dataset.download": "false"},
    )
    assert model.dataset_info.size == 64
    model.set_labels({0: 0, 1: 1})
    handle = model.launch(epochs=1, wait=True, in_process=True)
    assert handle.status == "FINISHED", handle.summary.error


def _png(path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_with_class_folders(tmp_path):
    from activelab.plugins import get_plugins

    for cls_name, value in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _png(tmp_path / "pics" / cls_name / f"{i}.png", value)
    dataset = get_plugins().get("datasets", "image-folder")(path=str(tmp_path / "pics"), size=16)
    info = dataset.info()
    assert info.classes == ("cat", "dog") and info.size == 6 and info.has_true_labels
    data = dataset.load()
    assert data.images.shape == (6, 1, 16, 16)
    assert list(data.true_labels) == [0, 0, 0, 1, 1, 1]
    assert data.images[0].mean() == pytest.approx(10 / 255, abs=0.01)


def test_flat_image_folder_for_unlabeled_data(local_lab, tmp_path):
    for i in range(4):
        _png(tmp_path / "flat" / f"img{i}.png", 50 * i)
    model = local_lab.create_model(
        "flat",
        dataset="image-folder",
        config={"dataset.path": str(tmp_path / "flat"), "dataset.classes": "good,bad"},
    )
    info = model.dataset_info
    assert (info.size, info.classes, info.has_true_labels) == (4, ("good", "bad"), False)
    model.set_label(3, "bad")
    assert model.labels.stats() == {"good": 0, "bad": 1}
    with pytest.raises(InvalidConfigError, match="needs a folder"):
        local_lab.create_model("nofolder", dataset="image-folder")


class Unlabeled(Dataset):
    """Random images without classes."""

    kind = "noise"

    def info(self):
        return DatasetInfo(self.kind, 20, (), (1, 4, 4), has_true_labels=False)

    def load(self, progress=None):
        return DataBundle(
            np.random.default_rng(0).random((20, 1, 4, 4), dtype=np.float32), None, self.info()
        )


class EveryThird(QueryStrategy):
    """Prefers every third sample (a plugin strategy)."""

    kind = "every_third"

    def scores(self, probabilities, rng):
        return (np.arange(len(probabilities)) % 3 == 0).astype(float)


class Constant(Trainer):
    """Logs one metric per epoch and stops (a plugin trainer)."""

    kind = "constant"

    def fit(self, session):
        session.begin(steps_per_epoch=1)
        for epoch in range(session.start_epoch + 1, session.start_epoch + session.epochs + 1):
            session.log_metrics({"loss/total": 1.0 / epoch}, step=epoch)
            session.step_done(epoch, epoch)
            session.end_epoch(epoch, {"epoch/loss/total": 1.0 / epoch}, epoch)


class ComponentsPlugin:
    @hookimpl
    def register_datasets(self, register):
        register(Unlabeled)

    @hookimpl
    def register_strategies(self, register):
        register(EveryThird)

    @hookimpl
    def register_trainers(self, register):
        register(Constant)


@pytest.fixture
def components(local_lab):
    host = local_lab.plugins
    host.add(ComponentsPlugin(), "components", "test", None, "tests")
    yield host
    host.remove("components")


def test_a_task_that_needs_classes_cannot_join_data_without_them(local_lab, components):
    model = local_lab.create_model("noisy", dataset="noise")  # the preset leaves it out
    assert [t.name for t in model.config.tasks] == ["reconstruction", "kl", "map"]
    with pytest.raises(InvalidConfigError, match="needs class labels.*'noise' does not provide"):
        model.add_task("classification")
    with pytest.raises(InvalidLabelError, match="no classes to label with"):
        model.set_label(0, 1)
    assert [t.name for t in local_lab.get_model("noisy").config.tasks] == [
        "reconstruction",
        "kl",
        "map",
    ]


def test_a_plugin_trainer_runs_through_the_same_session(local_lab, components, unique):
    model = local_lab.create_model(unique, config={"trainer": "constant"})
    handle = model.launch(epochs=3, wait=True, in_process=True, system_metrics=False)
    assert handle.status == "FINISHED"
    assert handle.metrics["epoch/loss/total"] == pytest.approx(1 / 3)
    assert local_lab.get_model(unique).card.total_epochs == 3


def test_plugin_strategy_ranks_unlabeled_samples(components):
    probabilities = np.full((10, 3), 1 / 3)
    labeled = np.zeros(10, dtype=bool)
    labeled[3] = True
    chosen = components.get("strategies", "every_third")().select(probabilities, labeled, 3, seed=0)
    assert sorted(chosen.tolist()) == [0, 6, 9]


def test_built_in_strategies_rank_by_uncertainty():
    from activelab.plugins import get_plugins

    probabilities = np.array(
        [
            [0.98, 0.01, 0.01],  # confident
            [0.40, 0.35, 0.25],  # uncertain, small margin
            [0.50, 0.49, 0.01],  # small margin, but confident about the rest
            [0.34, 0.335, 0.325],  # most uncertain, highest entropy, smallest margin
        ]
    )
    labeled = np.array([False, False, False, False])
    host = get_plugins()

    def pick(kind: str, count: int) -> list[int]:
        return host.get("strategies", kind)().select(probabilities, labeled, count, 0).tolist()

    assert pick("least_confidence", 2) == [3, 1]
    assert pick("margin", 2) == [3, 2]
    assert pick("entropy", 1) == [3]
    assert sorted(pick("random", 4)) == [0, 1, 2, 3]
    labeled[3] = True
    assert pick("least_confidence", 1) == [1]  # labeled samples are never proposed


def test_coreset_and_diverse_margin_spread_a_batch_over_the_latent_map():
    from activelab.plugins import get_plugins

    host = get_plugins()
    rng = np.random.default_rng(0)
    # four tight clusters of 50 at the corners of a square; cluster 0 is labeled
    corners = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    latent = np.repeat(corners, 50, axis=0) + rng.normal(scale=0.1, size=(200, 2))
    cluster = np.repeat(np.arange(4), 50)
    labeled = cluster == 0
    flat = np.full((200, 3), 1 / 3)

    coreset = host.get("strategies", "coreset")()
    picked = coreset.select(flat, labeled, 3, seed=0, latent=latent)
    assert sorted(cluster[picked].tolist()) == [1, 2, 3]  # one from each unlabeled cluster
    assert cluster[picked[0]] == 3  # the farthest from the labeled corner comes first
    nothing_labeled = coreset.select(flat, np.zeros(200, bool), 4, seed=0, latent=latent)
    assert sorted(cluster[nothing_labeled].tolist()) == [0, 1, 2, 3]

    # uncertainty: cluster 1 is confident; clusters 2 and 3 are uncertain
    probabilities = np.tile([0.98, 0.01, 0.01], (200, 1))
    probabilities[cluster >= 2] = [0.40, 0.35, 0.25]
    margin_only = host.get("strategies", "margin")().select(probabilities, labeled, 2, 0)
    diverse = host.get("strategies", "diverse_margin")().select(
        probabilities, labeled, 2, seed=0, latent=latent
    )
    assert set(cluster[margin_only]) <= {2, 3}
    assert sorted(cluster[diverse].tolist()) == [2, 3]  # uncertain and apart
    assert not labeled[diverse].any() and len(set(diverse.tolist())) == 2
    # without the latent (an older caller) the diversity strategies still answer
    assert len(coreset.select(flat, labeled, 5, seed=0)) == 5
