"""Image data: the conv network, consistency under augmentation, the latent data graph and the
image folder's decode cache, with real training on small folders."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bench.hard_digits import folder_sources, write_folder
from helpers import mlflow_client

from activelab.errors import InvalidConfigError

# a quick run: few, small batches (the conv path's defaults are for real data)
QUICK = {
    "trainer.batch_size": "32",
    "trainer.labeled_per_batch": "16",
    "trainer.recon_images": "4",
    "trainer.log_model": "false",
    "trainer.threads": "1",
    "tasks.consistency.samples": "32",
    "trainer.graph_every": "1",
}


@pytest.fixture
def hard_folder(tmp_path):
    """40 digits, 2 distorted drawings each: 80 28x28 PNGs in class folders."""
    folder = tmp_path / "hard"
    write_folder(folder, variants=2, limit=40)
    return folder


def image_model(lab, folder, name="hard", **config):
    return lab.create_model(
        name, dataset="image-folder", config={"dataset.path": str(folder), **QUICK, **config}
    )


def test_images_get_a_conv_network_and_consistency_and_digits_keep_the_mlp(local_lab, hard_folder):
    from activelab.tasks.ssvae_network import ConvEncoder

    images = image_model(local_lab, hard_folder)
    assert "consistency" in [t.kind for t in images.config.tasks]
    digits = local_lab.create_model("small")
    assert "consistency" not in [t.kind for t in digits.config.tasks]
    # the conv network's map only draws the latent: its classes pull harder there
    assert images.config.task("map").params["class_pull"] == 3.0
    assert digits.config.task("map").params["class_pull"] == 1.0

    def network(model):
        trainer = local_lab.plugins.get("trainers", model.config.trainer)(
            **model.config.trainer_params
        )
        return trainer.build_model(model.dataset_info, []).network

    assert isinstance(network(images).encoder, ConvEncoder)
    assert not isinstance(network(digits).encoder, ConvEncoder)
    mlp = image_model(local_lab, hard_folder, "as-mlp", **{"trainer.encoder": "mlp"})
    assert not isinstance(network(mlp).encoder, ConvEncoder)


def test_a_conv_model_trains_with_consistency_and_rebuilds_its_graph_from_the_latent(
    local_lab, hard_folder
):
    model = image_model(local_lab, hard_folder)
    _sources, truth = folder_sources(hard_folder)
    model.set_labels({int(i): int(truth[i]) for i in range(0, 80, 4)})
    first = model.launch(epochs=2, wait=True, system_metrics=False, in_process=True)
    assert first.status == "FINISHED", first.summary.error
    client = mlflow_client(local_lab)
    metrics = client.get_run(first.run_id).data.metrics
    assert metrics["loss/consistency"] >= 0
    assert 0 <= metrics["eval/consistency/confident_share"] <= 1
    # a fresh run starts on the pixel graph and moves to the latent's after its first epochs
    assert "graph/propagated_accuracy" in metrics

    resumed = model.launch(
        epochs=1, resume_from=first.run_id, wait=True, system_metrics=False, in_process=True
    )
    assert resumed.status == "FINISHED", resumed.summary.error
    history = client.get_metric_history(resumed.run_id, "graph/propagated_accuracy")
    # a continued run takes its graph from the checkpoint's latent before its first step
    assert [point.step for point in history] == [2]
    assert 0 <= history[0].value <= 1
    frame = model._predictions_frame(resumed.run_id)[1]
    assert len(frame) == 80 and set(frame["predicted"]) <= set(range(10))


def test_augmentations_keep_shape_and_range_and_unknown_names_are_refused(local_lab, hard_folder):
    import torch

    from activelab.tasks.augment import AUGMENTATIONS, pipeline

    batch = torch.rand(8, 3, 32, 32)
    for name, augmentation in AUGMENTATIONS.items():
        out = augmentation(batch)
        assert out.shape == batch.shape, name
        assert float(out.min()) >= 0 and float(out.max()) <= 1, name
    strong = pipeline(["geometry", "contrast", "noise", "cutout"])(batch)
    assert not torch.allclose(strong, batch)
    with pytest.raises(InvalidConfigError, match="Unknown augmentation.*'spin'.*choose from"):
        image_model(local_lab, hard_folder, **{"tasks.consistency.strong": '["spin"]'})


def test_an_image_folder_is_decoded_once_and_again_when_a_file_changes(tmp_path, hard_folder):
    from PIL import Image

    from activelab.plugins import get_plugins

    dataset = get_plugins().get("datasets", "image-folder")(path=str(hard_folder))
    decoded: list[str] = []
    first = dataset.load(progress=lambda fraction, text: decoded.append(text))
    assert decoded and "decoding" in decoded[0]
    cache = list((tmp_path / "home" / "datasets" / "image-cache").glob("*.npy"))
    assert len(cache) == 1

    decoded.clear()
    again = dataset.load(progress=lambda fraction, text: decoded.append(text))
    assert decoded == [], "an unchanged folder is read from the cache"
    np.testing.assert_array_equal(first.images, again.images)

    changed = hard_folder / dataset.listing().files[0]
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(changed)
    os.utime(changed, ns=(0, 10**18))  # a new modification time, whatever the clock says
    decoded.clear()
    third = dataset.load(progress=lambda fraction, text: decoded.append(text))
    assert decoded, "a changed file is decoded again"
    assert third.images[0].mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(third.images[1:], first.images[1:])
    assert len(list(cache[0].parent.glob("*.npy"))) == 1, "the old cache is removed"

    # another size is another cache: the folder's last one is not taken for it
    smaller = type(dataset)(path=str(hard_folder), size=20).load()
    assert smaller.images.shape[1:] == (1, 20, 20)
    (stored,) = cache[0].parent.glob("*.npy")
    stored.write_bytes(stored.read_bytes()[:100])  # a damaged cache file is decoded again
    decoded.clear()
    fourth = type(dataset)(path=str(hard_folder), size=20).load(
        progress=lambda fraction, text: decoded.append(text)
    )
    assert decoded and fourth.images.shape == smaller.images.shape
    np.testing.assert_array_equal(fourth.images, smaller.images)


def test_rgb_and_mixed_size_images_are_resized_to_the_models_size(tmp_path):
    from PIL import Image

    from activelab.plugins import get_plugins

    rng = np.random.default_rng(0)
    for i, (width, height) in enumerate([(40, 30), (64, 64), (17, 50)]):
        target = tmp_path / "photos" / ("a" if i < 2 else "b") / f"{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels, mode="RGB").save(target)
    dataset = get_plugins().get("datasets", "image-folder")(
        path=str(tmp_path / "photos"), size=32, grayscale=False
    )
    data = dataset.load()
    assert data.images.shape == (3, 3, 32, 32) and data.images.dtype == np.float32
    assert list(data.true_labels) == [0, 0, 1]
    assert data.images.min() >= 0 and data.images.max() <= 1


def test_a_cold_start_picks_what_the_data_is_made_of_and_shows_no_made_up_classes(local_lab):
    from activelab.tasks.datasets import Digits

    truth = Digits().load().true_labels
    model = local_lab.create_model("cold")  # no labels, no run

    def classes_covered(strategy: str) -> float:
        return float(
            np.mean([len(set(truth[model.next_to_label(10, strategy, seed=s)])) for s in range(4)])
        )

    typical, random = classes_covered("auto"), classes_covered("random")
    assert typical >= random + 1, (typical, random)
    frame = model._latest_or_untrained()
    assert (frame["predicted"] == -1).all() and frame["certainty"].isna().all()
    assert not [c for c in frame.columns if c[:1] == "p" and c[1:].isdigit()]


def test_pretrained_features_from_a_local_file_reach_the_graph_classifier_and_map(
    local_lab, hard_folder, tmp_path, monkeypatch
):
    import mlflow
    import torch
    import torchvision

    from activelab.runtime import build_tasks, build_trainer
    from activelab.tasks.neighbors import nearest_neighbours

    weights = tmp_path / "resnet18-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    settings = {
        "trainer.features": "resnet18",
        "trainer.features_weights": str(weights),
        "trainer.features_size": "32",
        "trainer.log_model": "true",
    }
    model = image_model(local_lab, hard_folder, "photos", **settings)
    _sources, truth = folder_sources(hard_folder)
    model.set_labels({int(i): int(truth[i]) for i in range(0, 80, 4)})
    handle = model.launch(epochs=2, system_metrics=False, in_process=True)
    assert handle.wait(timeout=300, follow_ups=True) == "FINISHED", handle.summary.error

    config, host = model.config, local_lab.plugins
    trainer = build_trainer(config, host)
    bundle = host.get("datasets", config.dataset)(**config.dataset_params).load()
    features = trainer.features_of(bundle)
    assert features.shape == (80, 512)  # resnet18's features, not the 784 pixels
    tasks = build_tasks(config, host, bundle.info)
    network = trainer.build_model(bundle.info, tasks).network
    assert network.encoder[1].in_features == 512
    data = trainer.training_data(bundle, model.labels.as_array(), tasks)
    expected = nearest_neighbours(features[data.train_idx], trainer.neighbours)
    np.testing.assert_array_equal(data.graph, expected)  # the graph is the features'
    frame = model._predictions_frame(handle.run_id)[1]
    assert set(frame["predicted"]) <= set(range(10)) and frame[["z0", "z1"]].notna().all().all()
    # the logged model holds the frozen network, so it takes images
    found = mlflow_client(local_lab).search_logged_models(experiment_ids=[model.id])
    logged = mlflow.pyfunc.load_model(found[0].model_uri)
    out = logged.predict(bundle.images[:3])
    assert out.shape == (3, 2 + 10 + 2 + 16)  # predicted, certainty, p_<class>, map, latent

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    missing = image_model(local_lab, hard_folder, "no-weights", **{"trainer.features": "resnet18"})
    missing.set_labels({0: int(truth[0])})
    failed = missing.launch(epochs=1, wait=True, system_metrics=False, in_process=True)
    assert failed.status == "FAILED"
    assert (
        "nothing is downloaded" in failed.summary.error
        and "empty-torch-home" in failed.summary.error
    )


def test_a_model_saved_before_the_conv_network_keeps_its_mlp(local_lab, hard_folder):
    from activelab.config import ModelConfig

    model = image_model(local_lab, hard_folder)
    saved = model.config.to_dict()
    assert saved["trainer_params"]["encoder"] == "auto"  # new models resolve it from the data
    del saved["trainer_params"]["encoder"]  # as every config written before it existed
    assert ModelConfig.from_dict(saved).trainer_params["encoder"] == "mlp"
