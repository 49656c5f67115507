"""The trained model as an MLflow model: a pyfunc that reads images in every common form and
returns a named table, with real training on a small image folder."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from bench.hard_digits import write_folder
from helpers import mlflow_client

from activelab.tasks.image_cache import list_folder

QUICK = {
    "trainer.batch_size": "32",
    "trainer.labeled_per_batch": "16",
    "trainer.recon_images": "0",
    "trainer.threads": "1",
    "tasks.consistency.samples": "32",
}


def trained_image_model(lab, folder, name, **config):
    """An image-folder model with 40 labels and one finished run with its logged model."""
    model = lab.create_model(
        name, dataset="image-folder", config={"dataset.path": str(folder), **QUICK, **config}
    )
    truth = np.array(list_folder(folder).targets)
    model.set_labels({int(i): int(truth[i]) for i in range(0, 80, 2)})
    handle = model.launch(epochs=1, system_metrics=False, in_process=True)
    assert handle.wait(timeout=300, follow_ups=True) == "FINISHED", handle.summary.error
    (logged,) = mlflow_client(lab).search_logged_models(experiment_ids=[model.id])
    return model, logged


def pixels_of(folder, channels: int) -> tuple[list[str], np.ndarray]:
    """Every file of the folder in the data set's order, and its uint8 pixels (N, H, W, C)."""
    from PIL import Image

    files = [str(folder / relative) for relative in list_folder(folder).files]
    mode = "L" if channels == 1 else "RGB"
    arrays = [np.asarray(Image.open(path).convert(mode).resize((28, 28))) for path in files]
    pixels = np.stack(arrays)
    return files, pixels if channels == 3 else pixels[..., None]


@pytest.fixture
def hard_folder(tmp_path):
    folder = tmp_path / "hard"
    write_folder(folder, variants=2, limit=40)  # 80 28x28 PNGs in class folders
    return folder


def test_the_logged_model_reads_images_in_every_common_form(local_lab, hard_folder):
    model, logged = trained_image_model(local_lab, hard_folder, "gray")
    served = mlflow.pyfunc.load_model(logged.model_uri)
    files, pixels = pixels_of(hard_folder, 1)
    floats = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255  # what training read
    expected = served.predict(floats)
    # the output: named columns, the class names, certainties that are probabilities
    classes = [str(c) for c in model.dataset_info.classes]
    latent = [c for c in expected.columns if c.startswith("latent_")]
    assert list(expected.columns) == [
        "predicted", "certainty", *[f"p_{c}" for c in classes], "map_x", "map_y", *latent
    ]  # fmt: skip
    assert len(latent) >= 2 and set(expected["predicted"]) <= set(classes)
    probabilities = expected[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-4)
    np.testing.assert_allclose(expected["certainty"], probabilities.max(axis=1), rtol=1e-6)
    # the same classes and map as the app's predictions of the run
    app = model.predictions()
    assert (expected["predicted"].to_numpy() == app["predicted"].to_numpy()).mean() >= 0.97
    np.testing.assert_allclose(expected[["map_x", "map_y"]], app[["z0", "z1"]], atol=1e-3)
    # every form a person may have, the same answer
    n = len(files)
    forms = {
        "(N, 1, H, W) floats": floats,
        "(N, H, W) floats": floats[:, 0],
        "(N, H, W, 1) floats": floats.transpose(0, 2, 3, 1),
        "flat (N, H*W)": floats.reshape(n, -1),
        "uint8 0-255 (N, H, W)": pixels[..., 0],
        "DataFrame of pixels": pd.DataFrame(floats.reshape(n, -1)),
        "list of file paths": files,
        "DataFrame of file paths": pd.DataFrame({"path": files}),
    }
    for form, value in forms.items():
        found = served.predict(value)
        assert list(found.columns) == list(expected.columns), form
        assert (found["predicted"] == expected["predicted"]).mean() >= 0.97, form
        np.testing.assert_allclose(found["map_x"], expected["map_x"], atol=1e-3, err_msg=form)
    # one form it cannot read: a clear error naming the forms it takes
    with pytest.raises(Exception, match=r"cannot read ndarray of shape \(3, 5\).*\(N, 28, 28\)"):
        served.predict(np.zeros((3, 5), dtype=np.float32))
    # what MLflow shows: the output columns named in the signature, a description, an example
    signature = served.metadata.signature
    assert signature.inputs is None  # any of the forms above passes through
    assert signature.outputs.input_names() == list(expected.columns)
    assert "image file paths" in logged.tags["mlflow.note.content"]
    assert served.metadata.saved_input_example_info is not None


def test_an_rgb_model_reads_channels_last_arrays_and_files(local_lab, hard_folder):
    _model, logged = trained_image_model(
        local_lab, hard_folder, "rgb", **{"dataset.grayscale": "false"}
    )
    served = mlflow.pyfunc.load_model(logged.model_uri)
    files, pixels = pixels_of(hard_folder, 3)
    from_files = served.predict(files[:10])
    from_array = served.predict(pixels[:10])  # (N, H, W, 3) uint8, as PIL and numpy give it
    from_chw = served.predict(pixels[:10].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert from_files["predicted"].tolist() == from_array["predicted"].tolist()
    np.testing.assert_allclose(from_chw["map_x"], from_array["map_x"], atol=1e-4)
    with pytest.raises(Exception, match=r"\(N, 3, 28, 28\), \(N, 28, 28, 3\)"):
        served.predict(pixels[:10, ..., 0])  # gray images for an RGB model
