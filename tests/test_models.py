"""Models are MLflow experiments: create from presets, list cards, edit, delete and restore."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from activelab import Lab, keys
from activelab.errors import (
    InvalidConfigError,
    ModelDeletedError,
    ModelExistsError,
    ModelNotFoundError,
    PluginError,
)


def task_weights(model) -> dict[str, float]:
    return {t.name: t.weight for t in model.config.tasks}


@pytest.mark.parametrize(
    ("preset", "weights"),
    [
        ("default", {"reconstruction": 50, "kl": 0.01, "classification": 1, "map": 1}),
        ("high_recon", {"reconstruction": 250, "kl": 0.01}),
        ("classification", {"reconstruction": 10, "kl": 0.01, "classification": 3}),
    ],
)
def test_presets_set_weights_and_learning_rate(lab, unique, preset, weights):
    model = lab.create_model(f"{unique}-{preset}", preset=preset)
    actual = task_weights(model)
    for name, weight in weights.items():
        assert actual[name] == pytest.approx(weight)
    assert model.config.trainer_params["lr"] == pytest.approx(1e-3)
    assert model.config.preset == preset
    assert model.card.dataset == "digits"


def test_model_is_an_experiment_with_note_and_marker(lab, unique):
    model = lab.create_model(unique, description="Digits, first try")
    exp = MlflowClient(lab.settings.tracking_uri).get_experiment(model.id)
    assert exp.name == unique
    assert exp.tags["mlflow.note.content"] == "Digits, first try"
    assert exp.tags[keys.MODEL_MARKER] == "1"
    assert model.dataset_info.size == 1797
    assert model.dataset_info.classes == tuple("0123456789")


def test_auto_names_count_up(local_lab):
    first = local_lab.create_model()
    second = local_lab.create_model()
    assert (first.name, second.name) == ("model-001", "model-002")
    first.delete()  # a deleted model's number is not reused while it can be restored
    assert local_lab.create_model().name == "model-003"


def test_overrides_apply_on_top_of_the_preset(lab, unique):
    model = lab.create_model(
        unique, config={"lr": "1e-4", "tasks.kl.weight": "0.5", "trainer.latent_dim": 3}
    )
    assert model.config.trainer_params["lr"] == pytest.approx(1e-4)
    assert model.config.trainer_params["latent_dim"] == 3
    assert task_weights(model)["kl"] == pytest.approx(0.5)
    assert task_weights(model)["reconstruction"] == pytest.approx(50)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": 1}, "Unknown setting 'learning_rate'"),
        ({"lr": "fast"}, "lr"),
        ({"lr": -1}, "lr"),
        ({"tasks.nope.weight": 1}, "no task 'nope'"),
        ({"tasks.kl.weight": -2}, "weight"),
        ({"tasks.kl.latent_slice": "0:20"}, "reaches past the 16-D latent"),
    ],
)
def test_bad_config_is_refused_and_nothing_is_created(local_lab, overrides, message):
    with pytest.raises(InvalidConfigError, match=message):
        local_lab.create_model("bad", config=overrides)
    assert local_lab.list_models() == []


def test_unknown_preset_and_dataset_are_refused(local_lab):
    with pytest.raises(InvalidConfigError, match="Unknown preset 'fast'"):
        local_lab.create_model("x", preset="fast")
    with pytest.raises(PluginError, match="Unknown dataset 'cifar'.*digits"):
        local_lab.create_model("x", dataset="cifar")
    assert local_lab.list_models() == []


def test_list_shows_only_activelab_models_with_card_figures(lab, unique):
    client = MlflowClient(lab.settings.tracking_uri)
    client.create_experiment(f"{unique}-plain-mlflow")
    older = lab.create_model(f"{unique}-a", tags={"team": "vision"})
    newer = lab.create_model(f"{unique}-b", dataset="digits")
    older.set_labels([1, 2, 3], "7")
    cards = [c for c in lab.list_models() if c.name.startswith(unique)]
    assert [c.name for c in cards] == [f"{unique}-b", f"{unique}-a"]  # newest first
    by_name = {c.name: c for c in cards}
    assert by_name[f"{unique}-a"].labeled_count == 3
    assert by_name[f"{unique}-a"].tags == {"team": "vision"}
    assert by_name[f"{unique}-b"].labeled_count == 0
    assert by_name[f"{unique}-b"].total_epochs == 0
    assert by_name[f"{unique}-b"].latest_loss is None
    assert by_name[f"{unique}-a"].updated >= by_name[f"{unique}-a"].created
    assert newer.id != older.id


def test_list_filters_by_name_tag_and_dataset(lab, unique):
    lab.create_model(f"{unique}-cats", tags={"team": "vision"})
    lab.create_model(f"{unique}-dogs", tags={"team": "audio"})
    assert [c.name for c in lab.list_models(name_contains=f"{unique}-CA")] == [f"{unique}-cats"]
    vision = [c.name for c in lab.list_models(tags={"team": "vision"}) if c.name.startswith(unique)]
    assert vision == [f"{unique}-cats"]
    assert {c.name for c in lab.list_models(dataset="digits", name_contains=unique)} == {
        f"{unique}-cats",
        f"{unique}-dogs",
    }
    assert lab.list_models(dataset="mnist", name_contains=unique) == []


def test_get_by_name_or_id_and_unknown_model(lab, unique):
    model = lab.create_model(unique)
    assert lab.get_model(unique).id == model.id
    assert lab.get_model(model.id).name == unique
    with pytest.raises(ModelNotFoundError, match="No model named 'nope"):
        lab.get_model(f"nope-{unique}")


def test_plain_experiments_are_not_models(lab, unique):
    MlflowClient(lab.settings.tracking_uri).create_experiment(f"{unique}-plain")
    with pytest.raises(ModelNotFoundError):
        lab.get_model(f"{unique}-plain")


def test_rename_and_name_conflicts(lab, unique):
    model = lab.create_model(f"{unique}-a")
    lab.create_model(f"{unique}-b")
    model.rename(f"{unique}-renamed")
    assert lab.get_model(f"{unique}-renamed").id == model.id
    with pytest.raises(ModelNotFoundError):
        lab.get_model(f"{unique}-a")
    with pytest.raises(ModelExistsError, match="taken"):
        model.rename(f"{unique}-b")
    with pytest.raises(InvalidConfigError, match="spaces"):
        model.rename(" padded ")


def test_delete_frees_the_name_and_restore_brings_it_back(lab, unique):
    model = lab.create_model(unique, tags={"keep": "me"})
    model.set_label(5, 3)
    model.delete()
    assert unique not in [c.name for c in lab.list_models()]
    assert unique in [c.name for c in lab.list_models(deleted=True)]
    with pytest.raises(ModelNotFoundError, match="restore"):
        lab.get_model(model.id)
    replacement = lab.create_model(unique)  # the name is free again
    with pytest.raises(ModelExistsError, match="--as"):
        lab.restore_model(model.id)
    restored = lab.restore_model(model.id, name=f"{unique}-old")
    assert restored.name == f"{unique}-old"
    assert restored.tags == {"keep": "me"}
    assert restored.labels.get(5) == 3  # labels survive delete and restore
    replacement.delete()
    assert lab.restore_model(unique).id == replacement.id  # by the name it had


def test_update_config_and_tasks(lab, unique):
    model = lab.create_model(unique)
    model.update_config({"lr": 0.01, "tasks.classification.enabled": "false"})
    reread = lab.get_model(unique)
    assert reread.config.trainer_params["lr"] == pytest.approx(0.01)
    assert reread.config.task("classification").enabled is False
    model.add_task("kl", name="kl_first", weight=0.2, latent_slice="0:1")
    assert lab.get_model(unique).config.task("kl_first").latent_slice == "0:1"
    model.remove_task("kl_first")
    assert [t.name for t in lab.get_model(unique).config.tasks] == [
        "reconstruction",
        "kl",
        "classification",
        "map",
    ]
    with pytest.raises(InvalidConfigError, match="dataset"):
        model.update_config({"dataset": "mnist"})


def test_user_tags(lab, unique):
    model = lab.create_model(unique)
    model.set_tags({"owner": "ana", "stage": "draft"})
    model.remove_tag("stage")
    assert lab.get_model(unique).tags == {"owner": "ana"}
    with pytest.raises(InvalidConfigError, match="reserved"):
        model.set_tags({"activelab.model": "0"})


def test_reopening_the_store_sees_everything(local_uri, tmp_path):
    from activelab import Lab

    first = Lab(tracking_uri=local_uri, home=tmp_path / "home")
    first.create_model("kept", description="survives restarts").set_labels({1: 2, 3: 4})
    again = Lab(tracking_uri=local_uri, home=tmp_path / "home").get_model("kept")
    assert again.description == "survives restarts"
    assert again.labels.as_dict() == {1: 2, 3: 4}


def test_embedded_default_store_lives_in_the_data_directory(tmp_path, monkeypatch):
    from activelab import Lab

    monkeypatch.setenv("ACTIVELAB_HOME", str(tmp_path / "data"))
    lab = Lab()
    model = lab.create_model("embedded")
    model.set_label(0, 0)
    assert lab.settings.tracking_uri == f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"
    assert (tmp_path / "data" / "mlflow.db").exists()
    assert model.experiment.artifact_location.startswith(str(tmp_path / "data" / "artifacts"))


def test_the_app_s_key_press_leaves_the_card_to_the_background(local_lab, unique):
    """Where a person waits on each label, the card's figures are written after the label;
    listing the cards waits for them, and another process sees them once written."""
    from activelab.card_updates import CARD_UPDATES, MIN_INTERVAL_S

    model = local_lab.create_model(unique)
    model.deferred_card = True
    for index in range(5):
        model.set_label(index, index)
    card = next(c for c in local_lab.list_models() if c.id == model.id)
    assert card.labeled_count == 5, "listing waits for this process's pending figures"
    model.set_label(5, 5)
    assert CARD_UPDATES.flush(timeout=30)
    elsewhere = Lab(tracking_uri=local_lab.settings.tracking_uri, home=local_lab.settings.home)
    assert elsewhere.get_model(model.id).card.labeled_count == 6

    # a steady stream of labels writes the card at most about once a second
    writes = []
    touch = model.touch
    model.touch = lambda tags: (writes.append(tags), touch(tags))[1]
    started = time.monotonic()
    for index in range(10, 40):
        model.set_label(index, index % 10)
    assert CARD_UPDATES.flush(timeout=30)
    seconds = time.monotonic() - started
    assert 1 <= len(writes) <= seconds / MIN_INTERVAL_S + 2, (len(writes), seconds)
    assert writes[-1][keys.LABELED_COUNT] == "36" and model.card.labeled_count == 36


def test_a_write_to_a_model_another_process_deleted_is_refused(local_lab, unique):
    """The process that labels holds the model open while another one deletes it."""
    model = local_lab.create_model(unique)
    model.set_labels({0: 1})
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    deleted = subprocess.run(
        [str(Path(sys.executable).with_name("activelab")),
         "--tracking-uri", local_lab.settings.tracking_uri,
         "--home", str(local_lab.settings.home), "models", "delete", unique],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr

    refusal = f"{unique}' was deleted at .* UTC; nothing was written.*models restore {model.id}"
    with pytest.raises(ModelDeletedError, match=refusal):
        model.set_labels({1: 2})
    with pytest.raises(ModelDeletedError, match="nothing was written"):
        model.labels.undo()
    with pytest.raises(ModelDeletedError, match="nothing was written"):
        model.labels.import_csv("2,3\n")
    restored = local_lab.restore_model(model.id)
    assert restored.labels.as_dict() == {0: 1}  # nothing of the refused writes landed
    restored.set_labels({1: 2})  # restored, it takes labels again
    assert restored.labels.as_dict() == {0: 1, 1: 2}


def test_a_card_says_how_many_samples_and_which_folder(local_lab, tmp_path):
    from bench.hard_digits import write_folder

    from activelab.panel_app.pages.home import dataset_html

    folder = tmp_path / "photos" / "hard"
    write_folder(folder, variants=1, limit=12)
    images = local_lab.create_model("folder-card", dataset="image-folder",
                                    config={"dataset.path": str(folder)})  # fmt: skip
    card = local_lab.get_model(images.id).card
    assert (card.samples, card.source) == (12, str(folder))
    shown = dataset_html(card)
    assert "12 samples" in shown and "…/photos/hard" in shown and f"title='{folder}'" in shown
    digits = local_lab.create_model("digits-card").card
    assert (digits.samples, digits.source) == (1797, "")
    assert dataset_html(digits) == "digits · 1,797 samples"
