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


def digits_model_with_a_run(lab, name, log_model=True):
    """A digits model with 50 labels and a 1-epoch run (its logged model may still be made)."""
    config = {"trainer.log_model": str(log_model), "trainer.recon_images": "0"}
    model = lab.create_model(name, config=config)
    model.set_labels({i: i % 10 for i in range(50)})
    handle = model.launch(epochs=1, system_metrics=False, in_process=True)
    assert handle.wait(timeout=300) == "FINISHED", handle.summary.error
    return model, handle.run_id


def test_register_puts_a_run_s_model_in_the_registry_under_an_alias(lab, unique, monkeypatch):
    """On the local store and through the server."""
    from click.testing import CliRunner

    from activelab.cli.main import cli
    from activelab.errors import ActivelabError, InvalidConfigError

    model, first = digits_model_with_a_run(lab, f"{unique}/reg")
    client = mlflow_client(lab)
    with pytest.raises(InvalidConfigError, match="cannot be an alias"):
        model.register(alias="latest")  # refused before anything is made
    assert client.search_registered_models(filter_string=f"name LIKE '{unique}%'") == []
    # right after the run's end: waits for its logged model, then registers it
    made = model.register(alias="champion")
    assert (made.name, made.version, made.run_id) == (f"{unique}-reg", "1", first)
    assert made.uri == f"models:/{unique}-reg@champion"
    version = client.get_model_version_by_alias(made.name, "champion")
    assert str(version.version) == "1" and version.run_id == first
    assert client.get_run(first).data.tags["activelab.registered_version"] == "1"
    assert model.refresh().card.registered == made  # the card shows it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", lab.settings.tracking_uri)
    served = mlflow.pyfunc.load_model(made.uri)
    out = served.predict(np.zeros((2, 8, 8), dtype=np.float32))
    assert list(out.columns[:2]) == ["predicted", "certainty"]
    # the CLI, naming an older run: a new version, and the alias moves to it
    second = model.launch(epochs=1, system_metrics=False, in_process=True, resume_from=first)
    assert second.wait(timeout=300) == "FINISHED"
    home = ["--home", str(lab.settings.home), "--tracking-uri", lab.settings.tracking_uri]
    args = ["models", "register", model.name, "--run", second.run_id, "--alias", "champion"]
    out = CliRunner().invoke(cli, [*home, *args])
    assert out.exit_code == 0, out.output
    assert "version 2" in out.output and f"models:/{unique}-reg@champion" in out.output
    assert str(client.get_model_version_by_alias(made.name, "champion").version) == "2"
    # a run without a logged model: said plainly
    plain, run = digits_model_with_a_run(lab, f"{unique}-plain", log_model=False)
    with pytest.raises(ActivelabError, match="no logged model.*trainer.log_model=true"):
        plain.register(run=run)


def test_mlflow_models_serve_answers_with_the_app_s_classes(local_lab, hard_folder, tmp_path):
    """`mlflow models serve -m models:/NAME@champion`, posted images as a script would."""
    import json
    import os
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from helpers import wait_until
    from served import http_ok

    from activelab.mlflow_server import free_port

    model, _logged = trained_image_model(local_lab, hard_folder, "served")
    made = model.register(alias="champion")
    port = free_port()
    bin_dir = Path(sys.executable).parent  # MLflow runs uvicorn from the PATH, as when activated
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": local_lab.settings.tracking_uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", made.uri,
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: server.poll() is not None or http_ok(url + "/ping"),
            timeout=180,
            message="mlflow models serve to answer",
        )
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        _files, pixels = pixels_of(hard_folder, 1)
        chosen = np.arange(0, 80, 80 // 32)[:32]
        body = json.dumps({"inputs": (pixels[chosen, ..., 0] / 255).tolist()}).encode()
        request = urllib.request.Request(
            url + "/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            rows = json.loads(response.read())["predictions"]
        app = model.predictions()
        predicted = [row["predicted"] for row in rows]
        agree = np.mean(np.array(predicted) == app["predicted"].to_numpy()[chosen])
        assert len(rows) == 32 and agree >= 0.97, (predicted, app["predicted"][chosen].tolist())
        assert {"certainty", "map_x", "map_y"} <= set(rows[0])
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
