"""Real training runs on digits, checked the way the MLflow UI shows them."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import FAST, drop_task_file, wait_until
from mlflow import MlflowClient

from activelab import Lab, keys
from activelab.backend import end_mark
from activelab.errors import InvalidConfigError, RunNotFoundError
from activelab.priority import autogroup_enabled, session_nice
from activelab.tasks.datasets import Digits


def train_two_epochs(lab, name, in_process=False, log_model=False):
    """A model with 60 labels and one finished 2-epoch run."""
    config = {**FAST, "trainer.checkpoint_every": "1", "trainer.log_model": str(log_model)}
    model = lab.create_model(name, config=config)
    model.set_labels({i: i % 10 for i in range(60)})
    handle = model.launch(epochs=2, in_process=in_process)
    handle.wait(timeout=300, follow_ups=True)  # and its logged model and evaluation
    return model, handle


@pytest.fixture
def trained(local_lab, unique):
    """A trained model to start from; trained in this process (no worker start to wait for)."""
    return train_two_epochs(local_lab, unique, in_process=True)


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_a_run_reads_well_in_mlflow(lab, unique):
    """The same on the local store and through the server (artifacts served by it)."""
    model, handle = train_two_epochs(lab, unique, log_model=True)
    assert handle.status == "FINISHED"
    client = MlflowClient(lab.settings.tracking_uri)
    run = client.get_run(handle.run_id)
    assert run.info.experiment_id == model.id
    assert run.info.run_name == f"{model.name} #1 · 2 epochs"
    params = run.data.params
    assert params["trainer.lr"] == "0.001"
    assert params["task.reconstruction.weight"] == "50.0"
    assert params["task.kl.weight"] == "0.01"
    assert params["epochs"] == "2" and params["dataset"] == "digits"
    # one value per setting, none empty; no continuation, so no resume_from
    assert "trainer.epochs" not in params and "resume_from" not in params
    assert all(value not in ("", "None") for value in params.values())
    assert run.data.tags["mlflow.user"]  # the UI's "Created by"
    experiment = client.get_experiment(model.id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    steps_per_epoch = json.loads(run.data.tags[keys.PROGRESS])["steps_per_epoch"]
    for task in ("reconstruction", "kl", "classification", "map", "total"):
        per_step = history(client, handle.run_id, f"loss/{task}")
        assert [s for s, _ in per_step] == list(range(1, 2 * steps_per_epoch + 1))
        assert [s for s, _ in history(client, handle.run_id, f"epoch/loss/{task}")] == [1, 2]
    assert [s for s, _ in history(client, handle.run_id, "val/loss/total")] == [1, 2]
    # accuracy on every unlabeled sample with a true class, and on the held-out ones
    assert 0 <= run.data.metrics["eval/classification/unlabeled_accuracy"] <= 1
    assert "val/classification/unlabeled_accuracy" in run.data.metrics
    assert any(k.startswith("system/") for k in run.data.metrics)  # MLflow system metrics

    names = {a.path for a in client.list_artifacts(handle.run_id)}
    assert {"checkpoints", "labels", "predictions", "model_summary.txt"} <= names
    checkpoints = [a.path for a in client.list_artifacts(handle.run_id, "checkpoints")]
    assert checkpoints == ["checkpoints/epoch-0001.pt", "checkpoints/epoch-0002.pt"]
    images = [a.path for a in client.list_artifacts(handle.run_id, "images")]
    assert any("reconstructions" in p for p in images)  # the UI's image grid, one per epoch

    with tempfile.TemporaryDirectory() as tmp:
        labels_csv = Path(client.download_artifacts(handle.run_id, "labels/labels.csv", tmp))
        assert labels_csv.read_text().splitlines()[1] == "0,0"
        frame = pd.read_parquet(
            client.download_artifacts(handle.run_id, "predictions/predictions.parquet", tmp)
        )
    assert len(frame) == 1797
    assert {"z0", "z1", "predicted", "certainty", "p0", "p9", "true_label"} <= set(frame.columns)
    assert {f"h{i}" for i in range(16)} <= set(frame.columns)  # the latent the map draws
    assert frame["certainty"].between(0, 1).all()

    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == f"{model.name}-labels"
    assert inputs[0].dataset.digest == model.labels.digest()
    # its source is the run's own labels artifact, readable from any machine
    assert inputs[0].dataset.source_type == "mlflow_run_artifact"
    mlflow.set_tracking_uri(lab.settings.tracking_uri)
    source = mlflow.data.get_source(inputs[0])
    assert source.uri == f"runs:/{handle.run_id}/labels/labels.csv"
    with tempfile.TemporaryDirectory() as tmp:
        assert Path(source.load(tmp)).read_text() == model.labels.to_csv()
    # the few activelab tags a finished run keeps are each explained in the README
    ours = {k for k in run.data.tags if k.startswith(keys.PREFIX)}
    assert not ours & set(keys.PROCESS_TAGS)  # liveness and the stop request end with the run
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert len(ours) <= 11 and all(f"`{k}`" in readme for k in ours), sorted(ours)
    assert run.data.tags[keys.LABELS_DIGEST] == model.labels.digest()
    assert run.data.tags[keys.RUN_LABELED_COUNT] == "60"
    # the run's description in the MLflow UI: what was trained, on which labels, the outcome
    note = run.data.tags["mlflow.note.content"]
    assert f"model **{model.name}**: 2 epoch(s) of trainer `ssvae`" in note
    assert f"Trained on 60 label(s), digest `{model.labels.digest()}`" in note
    assert "Ended **FINISHED** after 2 epoch(s); loss/total " in note
    assert "`loss/*` are per optimizer step; `epoch/*`, `val/*` and `eval/*` per epoch" in note
    # no figure that is 0 by construction (held-out samples have no label, no neighbour pair)
    assert "val/loss/classification" not in run.data.metrics
    assert "val/loss/map" not in run.data.metrics

    logged = client.search_logged_models(experiment_ids=[model.id])
    assert len(logged) == 1 and logged[0].source_run_id == handle.run_id
    assert logged[0].name == model.name  # named after the model, with a description
    assert f"activelab model **{model.name}**" in logged[0].tags["mlflow.note.content"]
    assert logged[0].params["epochs"] == "2"
    # its metrics: the last epoch's figures, measured with the labels it trained on
    linked = {m.key: m for m in logged[0].metrics}
    accuracy = linked["eval/classification/unlabeled_accuracy"]
    assert accuracy.value == pytest.approx(
        run.data.metrics["eval/classification/unlabeled_accuracy"], rel=1e-6
    )
    assert accuracy.step == 2 and accuracy.dataset_digest == model.labels.digest()
    assert accuracy.dataset_name == inputs[0].dataset.name
    served = mlflow.pyfunc.load_model(f"models:/{logged[0].model_id}")
    out = served.predict(np.zeros((3, 1, 8, 8), dtype=np.float32))
    assert out.shape == (3, 2 + 10 + 2 + 16)  # predicted, certainty, p_<class>, map, latent
    assert set(out["predicted"]) <= {str(c) for c in model.dataset_info.classes}

    card = lab.get_model(model.id).card
    assert card.total_epochs == 2
    assert card.latest_loss == pytest.approx(run.data.metrics["epoch/loss/total"], rel=1e-4)
    assert card.latest_run == handle.run_id and card.latest_run_status == "FINISHED"


def test_continue_from_a_checkpoint_keeps_lineage(local_lab, trained):
    lab = local_lab
    model, first = trained
    second = model.launch(
        epochs=2, resume_from=f"{first.run_id}:epoch-0001.pt", wait=True, in_process=True
    )
    assert second.status == "FINISHED"
    client = MlflowClient(lab.settings.tracking_uri)
    run = client.get_run(second.run_id)
    assert run.data.tags["mlflow.parentRunId"] == first.run_id
    assert run.data.tags[keys.PARENT_CHECKPOINT] == "checkpoints/epoch-0001.pt"
    assert run.info.run_name == f"{model.name} #2 · 2 epochs from #1"
    assert (
        f"Continues run `{first.run_id}` from `epoch-0001.pt`."
        in (run.data.tags["mlflow.note.content"])
    )
    assert [s for s, _ in history(client, second.run_id, "epoch/loss/total")] == [2, 3]
    assert [a.path for a in client.list_artifacts(second.run_id, "checkpoints")][-1] == (
        "checkpoints/epoch-0003.pt"
    )
    summary = second.summary
    assert (summary.epochs, summary.lineage_epochs, summary.parent_run) == (2, 3, first.run_id)
    assert lab.get_model(model.id).card.total_epochs == 3
    third = model.launch(
        epochs=1, resume_from=second.run_id, wait=True, in_process=True
    )  # its latest checkpoint
    assert third.summary.lineage_epochs == 4
    assert [r.run_id for r in model.runs()] == [third.run_id, second.run_id, first.run_id]


def test_export_checkpoint(trained, tmp_path):
    import torch

    model, handle = trained
    path = model.export_checkpoint(tmp_path / "out" / "model.pt")
    state = torch.load(path, weights_only=False)
    assert state["epoch"] == 2 and state["run_id"] == handle.run_id
    assert "network.to_mu.weight" in state["model"]
    folder_copy = model.export_checkpoint(tmp_path, run=f"{handle.run_id}:epoch-0001.pt")
    assert folder_copy == tmp_path / "epoch-0001.pt"
    with pytest.raises(RunNotFoundError, match="has no checkpoint"):
        model.export_checkpoint(tmp_path, run=f"{handle.run_id}:epoch-0009.pt")


def test_stop_ends_killed_with_a_checkpoint_and_every_metric(local_lab, unique):
    model = local_lab.create_model(unique, config=FAST)
    handle = model.launch(epochs=10_000)
    wait_until(lambda: (handle.progress or {}).get("run_steps", 0) > 20, message="training steps")
    assert handle.stop() == "KILLED"
    client = MlflowClient(local_lab.settings.tracking_uri)
    run = client.get_run(handle.run_id)
    last_checkpoint = run.data.tags[keys.LAST_CHECKPOINT]
    state = local_lab.get_model(model.id)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        saved = torch.load(
            client.download_artifacts(handle.run_id, last_checkpoint, tmp), weights_only=False
        )
    steps = [s for s, _ in history(client, handle.run_id, "loss/total")]
    assert steps == list(range(1, saved["global_step"] + 1))  # nothing logged was lost
    assert state.card.latest_run_status == "KILLED"
    assert "Ended **KILLED** after " in run.data.tags["mlflow.note.content"]
    frame_listed = {a.path for a in client.list_artifacts(handle.run_id)}
    assert "predictions" in frame_listed  # the map refreshes even after a stop


def test_the_worker_yields_to_the_app_at_a_lower_priority(local_lab, unique, monkeypatch):
    import os
    import signal

    import psutil

    monkeypatch.delenv("ACTIVELAB_WORKER_NICE")  # the product's default
    own_session_nice = session_nice()
    model = local_lab.create_model(unique, config=FAST)
    handle = model.launch(epochs=10_000)
    worker = psutil.Process(handle.process.pid)
    expected = min(psutil.Process().nice() + 10, 19)  # 10 below the launching side
    # os.nice runs first thing in the worker: wait for the process to get there
    wait_until(lambda: worker.nice() == expected, timeout=60, message=f"the worker at {expected}")
    if autogroup_enabled():  # Linux groups the CPU by session: the worker's yields too
        wait_until(lambda: session_nice(worker.pid) == expected, timeout=60,
                   message=f"the worker's session at nice {expected}")  # fmt: skip
        # None == None where the launcher's session began at boot (the root group, as in CI)
        assert session_nice() == own_session_nice, "the launcher's session keeps its priority"
    os.kill(worker.pid, signal.SIGKILL)
    assert handle.wait(timeout=60) == "FAILED"


def test_stop_from_anywhere_through_mlflow(local_lab, unique):
    """Another process (here: another Lab) stops the run by its id alone."""
    from activelab.runs import request_stop

    model = local_lab.create_model(unique, config=FAST)
    handle = model.launch(epochs=10_000)
    wait_until(lambda: (handle.progress or {}).get("run_steps", 0) > 5, message="training steps")
    other = Lab(tracking_uri=local_lab.settings.tracking_uri, home=local_lab.settings.home)
    client = MlflowClient(local_lab.settings.tracking_uri)
    client.set_tag(handle.run_id, keys.STOP_REQUESTED, "1")  # what a remote app would do
    assert handle.wait(timeout=120) == "KILLED"
    request_stop(other.tracking, handle.run_id)  # a stop of an ended run is a no-op


def test_a_crash_ends_failed_with_the_error_recorded(local_lab, unique, tmp_path):
    drop_task_file("crash_task.py", tmp_path / "tasks")
    lab = Lab(
        tracking_uri=local_lab.settings.tracking_uri,
        home=tmp_path / "home",
        tasks_dirs=[tmp_path / "tasks"],
    )
    model = lab.create_model(unique, config=FAST)
    model.add_task("crash_after", params={"steps": 3})
    handle = model.launch(epochs=3, wait=True)
    assert handle.status == "FAILED"
    run = MlflowClient(lab.settings.tracking_uri).get_run(handle.run_id)
    assert "boom: the crash_after task failed on purpose" in run.data.tags[keys.ERROR]
    assert run.data.tags["mlflow.note.content"].startswith("Failed: RuntimeError: boom")
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(
            MlflowClient(lab.settings.tracking_uri).download_artifacts(
                handle.run_id, "error.txt", tmp
            )
        ).read_text()
    assert "crash_task.py" in trace
    assert lab.get_model(model.id).card.latest_run_status == "FAILED"
    assert [
        s for s, _ in history(MlflowClient(lab.settings.tracking_uri), handle.run_id, "loss/total")
    ] == [1, 2, 3]


def test_a_non_finite_loss_is_refused(local_lab, unique, tmp_path):
    drop_task_file("nan_task.py", tmp_path / "tasks")
    lab = Lab(
        tracking_uri=local_lab.settings.tracking_uri,
        home=tmp_path / "home",
        tasks_dirs=[tmp_path / "tasks"],
    )
    model = lab.create_model(unique, config=FAST)
    model.add_task("nan_loss")
    handle = model.launch(epochs=2, wait=True)
    assert handle.status == "FAILED"
    error = handle.summary.error
    assert "total loss became nan at epoch 1, step 2" in error
    assert "lower the learning rate" in error


def test_bad_launches_are_refused_before_a_run_exists(local_lab, unique):
    model = local_lab.create_model(unique, config=FAST)
    with pytest.raises(InvalidConfigError, match="epochs must be at least 1"):
        model.launch(epochs=0)
    with pytest.raises(InvalidConfigError, match="Unknown setting"):
        model.launch(epochs=1, config={"nope": 1})
    with pytest.raises(RunNotFoundError, match="No run"):
        model.launch(epochs=1, resume_from="0123456789abcdef")
    assert model.runs() == []


def test_run_context_provider_tags_plain_mlflow_runs(local_lab, unique, monkeypatch):
    """With the package installed, a fluent run inside a model is stamped by activelab."""
    from mlflow.tracking import fluent

    # mlflow.set_experiment stays set for the whole process: undo it after this test, or later
    # in-process runs of other models in this test worker are refused by MLflow
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    model = local_lab.create_model(unique)
    model.set_labels([1, 2], 3)
    mlflow.set_tracking_uri(local_lab.settings.tracking_uri)
    mlflow.set_experiment(experiment_id=model.id)
    with mlflow.start_run() as run:
        pass
    tags = MlflowClient(local_lab.settings.tracking_uri).get_run(run.info.run_id).data.tags
    from activelab import __version__

    assert tags[keys.RUN_VERSION] == __version__
    assert tags[keys.LABELS_DIGEST] == model.labels.digest()
    other = MlflowClient(local_lab.settings.tracking_uri).create_experiment(f"{unique}-plain")
    mlflow.set_experiment(experiment_id=other)
    with mlflow.start_run() as plain:
        pass
    assert (
        keys.LABELS_DIGEST
        not in MlflowClient(local_lab.settings.tracking_uri).get_run(plain.info.run_id).data.tags
    )


def test_the_run_description_keeps_user_text_plain():
    from activelab.config import ModelConfig, TaskSpec
    from activelab.run_note import RunNote

    tasks = [TaskSpec("reconstruction", "reconstruction", 1000.0), TaskSpec("kl", "kl", 0.1),
             TaskSpec("classification", "classification", 1.0),
             TaskSpec("off", "kl", 2.0, enabled=False)]  # fmt: skip
    config = ModelConfig("default", "digits", {}, "ssvae", {}, tasks)
    note = RunNote("[click](http://x) *me*", 3, config)
    note.status, note.error = "FAILED", "ValueError: <script>bad</script>"
    text = note.markdown()
    assert text.startswith("Failed: ValueError: \\<script\\>bad\\</script\\>")
    assert "\\[click\\]\\(http://x\\) \\*me\\*" in text  # shown as typed, never a link
    assert "reconstruction (1000), kl (0.1), classification (1)" in text


def test_next_to_label_from_the_latest_predictions(local_lab, trained, unique):
    from click.testing import CliRunner

    from activelab.cli.main import cli
    from activelab.errors import InvalidConfigError, PluginError, RunNotFoundError
    from activelab.runs import probabilities_of, read_predictions

    model, handle = trained
    picked = model.next_to_label(5, strategy="margin")
    labeled = set(model.labels.as_dict())
    assert len(picked) == 5 and not set(picked) & labeled
    frame = read_predictions(local_lab.tracking, handle.run_id)
    top_two = np.sort(probabilities_of(frame, 10), axis=1)[:, -2:]
    margins = top_two[:, 1] - top_two[:, 0]
    unlabeled = np.array([i for i in range(len(frame)) if i not in labeled])
    # spread over the predicted classes, each class's picks its smallest margins
    predicted = frame["predicted"].to_numpy()
    for c in set(predicted[picked]):
        mine = [i for i in picked if predicted[i] == c]
        of_class = unlabeled[predicted[unlabeled] == c]
        assert sorted(margins[mine]) == pytest.approx(np.sort(margins[of_class])[: len(mine)])
    assert len(set(model.next_to_label(8, strategy="coreset"))) == 8

    out = CliRunner().invoke(
        cli,
        ["--tracking-uri", local_lab.settings.tracking_uri, "--home", str(local_lab.settings.home),
         "labels", "next", model.name, "-n", "5", "-s", "margin", "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == picked

    with pytest.raises(PluginError, match="installed: auto, coreset"):
        model.next_to_label(3, strategy="no_such_strategy")
    with pytest.raises(InvalidConfigError, match="at least 1"):
        model.next_to_label(0)
    # before any run: a cold start from the untrained model's representation
    fresh = local_lab.create_model(f"{unique}-fresh")
    assert len(set(fresh.next_to_label())) == 10
    with pytest.raises(RunNotFoundError, match="train it"):
        fresh.predictions()


def test_next_to_label_among_candidates_with_a_seed_and_predictions(local_lab, trained):
    model, _handle = trained
    pool = list(range(100, 400))
    picked = model.next_to_label(10, strategy="random", candidates=pool, seed=7)
    assert len(picked) == 10 and set(picked) <= set(pool)
    assert model.next_to_label(10, strategy="random", candidates=pool, seed=7) == picked
    for strategy in ("auto", "typiclust"):
        chosen = model.next_to_label(6, strategy=strategy, candidates=pool, seed=1)
        assert len(set(chosen)) == 6 and set(chosen) <= set(pool)

    frame = model.predictions()
    assert len(frame) == 1797
    assert set(frame["predicted"]) <= set(model.dataset_info.classes)  # class names
    assert (frame["true_label"] == [str(c) for c in Digits().load().true_labels]).all()
    assert {"z0", "z1", "h0", "certainty"} <= set(frame.columns)


def test_a_failed_run_or_a_changed_network_is_refused_before_a_run_exists(local_lab, trained):
    from activelab.runs import mark_failed

    model, handle = trained
    client = MlflowClient(local_lab.settings.tracking_uri)
    broken = client.create_run(model.id, tags={keys.RUN_KIND: "train"})
    mark_failed(local_lab.tracking, client.get_run(broken.info.run_id), "it broke")
    with pytest.raises(RunNotFoundError, match=r"\(FAILED\) logged no predictions; leave `run`"):
        model.next_to_label(3, run=broken.info.run_id)
    assert model.next_to_label(3)  # the latest run that has predictions

    before = len(model.runs())
    with pytest.raises(InvalidConfigError, match=r"trainer.latent_dim 16 -> 8"):
        model.launch(resume_from=handle.run_id, config={"trainer.latent_dim": 8})
    assert len(model.runs()) == before
    with pytest.raises(InvalidConfigError, match="whole number"):
        model.launch(epochs=1.7)


def test_a_resume_from_a_code_carrying_checkpoint_creates_no_run(local_lab, trained, tmp_path):
    import torch

    from activelab.errors import TrainingError

    model, handle = trained
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    planted = tmp_path / "epoch-0099.pt"  # what anyone with write access to the store can do
    torch.save({"model": {}, "extra": Payload()}, planted)
    MlflowClient(local_lab.settings.tracking_uri).log_artifact(
        handle.run_id, str(planted), "checkpoints"
    )
    before = len(model.runs())
    with pytest.raises(TrainingError, match="could run code"):
        model.launch(resume_from=f"{handle.run_id}:epoch-0099.pt")
    assert len(model.runs()) == before, "a refused resume leaves no run behind"
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    """Checkpoints come from the store, which anyone with write access can fill."""
    import io

    import torch

    from activelab.errors import TrainingError
    from activelab.runtime import load_checkpoint_bytes

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    buffer = io.BytesIO()
    torch.save({"model": {}, "extra": Payload()}, buffer)
    with pytest.raises(TrainingError, match="could run code"):
        load_checkpoint_bytes(buffer.getvalue())
    assert not marker.exists()
    with pytest.raises(TrainingError, match="damaged or not a checkpoint"):
        load_checkpoint_bytes(b"not a checkpoint")
    plain = io.BytesIO()
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3, "config": {"a": [1, None]}}, plain)
    assert load_checkpoint_bytes(plain.getvalue())["epoch"] == 3


def test_an_in_process_run_that_cannot_start_fails_instead_of_hanging(
    local_lab, unique, monkeypatch
):
    from mlflow.tracking import fluent

    model = local_lab.create_model(unique, config=FAST)
    other = MlflowClient(local_lab.settings.tracking_uri).create_experiment(f"{unique}-other")
    # the process chose another experiment (mlflow.set_experiment): MLflow refuses to resume
    # this model's run in it; the wait must end with that error, not poll forever
    monkeypatch.setattr(fluent, "_active_experiment_id", other)
    handle = model.launch(epochs=1, wait=True, in_process=True, system_metrics=False)
    assert handle.status == "FAILED"
    assert "active experiment ID" in handle.summary.error


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the warm worker forks on Linux only"
)
def test_launches_fork_from_the_warm_worker_under_their_own_settings(
    local_lab, unique, monkeypatch, tmp_path
):
    """The warm worker (started here under another home) forks each launch a worker of its
    own that takes the launcher's environment; two launches at once both start warm."""
    import os
    import signal

    import psutil

    from activelab import standby

    monkeypatch.setenv("ACTIVELAB_HOME", str(tmp_path / "another-home"))
    warm = standby.start(tmp_path / "another-home")
    monkeypatch.setenv("ACTIVELAB_HOME", str(local_lab.settings.home))
    wait_until(warm.ready.is_set, timeout=120, message="the warm worker to say it is ready")
    monkeypatch.setenv("ACTIVELAB_WORKER_NICE", "3")  # the launcher's setting, not the worker's
    model = local_lab.create_model(unique, config=FAST)
    model.set_labels({i: i % 10 for i in range(20)})
    handles = [model.launch(epochs=10_000), model.launch(epochs=10_000)]
    workers = [psutil.Process(h.process.pid) for h in handles]
    assert all(w.ppid() == warm.process.pid for w in workers), "forked by the warm worker"
    expected = min(psutil.Process().nice() + 3, 19)
    wait_until(lambda: all(w.nice() == expected for w in workers),
               message=f"both workers at nice {expected}")  # fmt: skip
    if autogroup_enabled():  # each in a session of its own, at the same niceness
        wait_until(lambda: all(session_nice(w.pid) == expected for w in workers),
                   message=f"both workers' sessions at nice {expected}")  # fmt: skip
    client = MlflowClient(local_lab.settings.tracking_uri)
    pids = set()
    for handle in handles:  # each stopped once it trains (two at once crowd a loaded machine)
        wait_until(lambda h=handle: (h.progress or {}).get("run_steps", 0) > 0, message="steps")
        pids.add(client.get_run(handle.run_id).data.tags[keys.PID])  # named while it lives
        handle.stop(wait=False)
    assert pids == {str(w.pid) for w in workers}, "each run names its own worker"
    for handle in handles:  # and its worker's end (its follow-ups: the logged model)
        assert handle.wait(timeout=120, follow_ups=True) == "KILLED", handle.summary.error
        log = local_lab.settings.home / "runs" / handle.run_id / "worker.log"
        assert f"run {handle.run_id} ended: KILLED" in log.read_text()
        assert keys.PID not in client.get_run(handle.run_id).data.tags, "gone with the process"
    # a forked worker killed: its launcher hears how it ended from the warm worker
    killed = model.launch(epochs=10_000)
    os.kill(killed.process.pid, signal.SIGKILL)
    assert killed.wait(timeout=120) == "FAILED"
    assert "The trainer exited with code -9 before ending its run" in killed.summary.error


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_the_device_is_checked_when_set_and_cpu_trains(local_lab, unique):
    with pytest.raises(InvalidConfigError, match="not a device; use auto, cpu, cuda or cuda:N"):
        local_lab.create_model(f"{unique}-bad", config={"trainer.device": "gpu0"})
    model = local_lab.create_model(unique, config={**FAST, "trainer.device": "cpu"})
    model.set_labels({i: i % 10 for i in range(20)})
    handle = model.launch(epochs=1, wait=True, in_process=True)
    assert handle.status == "FINISHED", handle.summary.error


def test_a_round_ends_before_its_logged_model_and_evaluation(local_lab, unique):
    """wait() returns with the predictions in hand; the export and the evaluation come after
    the run's end (a round costs its training), and wait(follow_ups=True) waits for them."""
    config = {**FAST, "trainer.log_model": "true"}
    model = local_lab.create_model(unique, config=config)
    model.set_labels({i: i % 10 for i in range(30)})
    handle = model.launch(epochs=1, system_metrics=False)
    assert handle.wait(timeout=300) == "FINISHED", handle.summary.error
    # its worker marks the end on this machine (wait() looks for the mark between its reads
    # of the run, so it may have seen the end in the store just before the mark was written)
    assert handle.end_mark == end_mark(local_lab.settings.home, handle.run_id)
    wait_until(handle.end_mark.exists, timeout=60, message="the worker's end mark")
    assert handle.run.data.tags.get(keys.FOLLOW_UPS) in ("running", None)  # None: done
    assert len(model.predictions(handle.run_id)) == len(Digits().load().images)

    assert handle.wait(timeout=300, follow_ups=True) == "FINISHED"
    run = handle.run
    assert keys.FOLLOW_UPS not in run.data.tags
    client = MlflowClient(local_lab.settings.tracking_uri)
    (logged,) = client.search_logged_models(experiment_ids=[model.id])
    assert logged.source_run_id == handle.run_id
    assert logged.creation_timestamp >= run.info.end_time  # made after the run's end
    (evaluation,) = client.search_runs(
        [model.id], filter_string=f"tags.`activelab.eval_of` = '{handle.run_id}'"
    )
    assert evaluation.info.start_time >= run.info.end_time


def test_log_model_off_ends_the_run_with_checkpoints_and_no_logged_model(local_lab, unique):
    model = local_lab.create_model(unique, config=FAST)  # FAST turns trainer.log_model off
    model.set_labels({i: i % 10 for i in range(20)})
    handle = model.launch(epochs=1, wait=True, in_process=True)
    assert handle.status == "FINISHED", handle.summary.error
    client = MlflowClient(local_lab.settings.tracking_uri)
    assert client.search_logged_models(experiment_ids=[model.id]) == []
    assert client.get_run(handle.run_id).data.params["trainer.log_model"] == "False"
    assert handle.summary.last_checkpoint


def accuracy_after_two_epochs(lab, name: str, setting: str, value: str) -> float:
    """The unlabeled accuracy of a 2-epoch run (60 labels) with `trainer.<setting>=value`."""
    model = lab.create_model(name, config={**FAST, f"trainer.{setting}": value})
    model.set_labels({i: i % 10 for i in range(60)})
    handle = model.launch(epochs=2, wait=True, in_process=True)
    assert handle.status == "FINISHED", handle.summary.error
    run = MlflowClient(lab.settings.tracking_uri).get_run(handle.run_id)
    assert run.data.params[f"trainer.{setting}"] == value
    return run.data.metrics["eval/classification/unlabeled_accuracy"]


def test_bf16_mixed_precision_learns_as_well_as_fp32(local_lab, unique):
    """bf16 autocast (weights and optimizer in fp32) ends near the fp32 run of the same
    seed; fp16 asked for on the CPU fails at once saying what to use instead."""
    figures = {
        precision: accuracy_after_two_epochs(
            local_lab, f"{unique}-{precision}", "precision", precision
        )
        for precision in ("fp32", "bf16")
    }
    assert abs(figures["fp32"] - figures["bf16"]) < 0.05, figures

    with pytest.raises(InvalidConfigError, match="precision"):
        local_lab.create_model(f"{unique}-bad", config={"trainer.precision": "fp8"})
    model = local_lab.create_model(
        f"{unique}-fp16", config={**FAST, "trainer.device": "cpu", "trainer.precision": "fp16"}
    )
    model.set_labels({0: 0})
    handle = model.launch(epochs=1, wait=True, in_process=True)
    assert handle.status == "FAILED"
    assert "precision=fp16 needs a CUDA GPU" in handle.summary.error


def test_precision_auto_takes_bf16_only_where_the_hardware_computes_it():
    """`precision=auto` (the default): fp32 for the MLP; for the conv network bf16 exactly
    where the CPU has bfloat16 instructions (read independently from /proc/cpuinfo)."""
    import torch

    from activelab.tasks.ssvae import SSVAETrainer, native_bf16

    cpu = torch.device("cpu")
    trainer = SSVAETrainer()
    assert trainer.precision == "auto"
    assert trainer.resolved_precision(cpu, "mlp") == "fp32"
    assert trainer.resolved_precision(cpu, "conv") == ("bf16" if native_bf16(cpu) else "fp32")
    assert SSVAETrainer(precision="fp32").resolved_precision(cpu, "conv") == "fp32"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = set(cpuinfo.read_text().split())
        assert native_bf16(cpu) == bool(flags & {"avx512_bf16", "amx_bf16"}), flags


@pytest.mark.skipif(_cuda_available(), reason="this machine has a CUDA GPU")
def test_a_gpu_asked_for_on_a_worker_without_one_fails_saying_what_to_use(local_lab, unique):
    model = local_lab.create_model(unique, config={**FAST, "trainer.device": "cuda"})
    model.set_labels({0: 0})
    handle = model.launch(epochs=1, wait=True, in_process=True)
    assert handle.status == "FAILED"
    assert "this worker has no CUDA GPU; use device=auto" in handle.summary.error


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU; this machine has none")
def test_training_on_the_gpu_logs_the_same_figures_as_on_the_cpu(local_lab, unique):
    figures = {
        device: accuracy_after_two_epochs(local_lab, f"{unique}-{device}", "device", device)
        for device in ("cpu", "cuda")
    }
    assert abs(figures["cpu"] - figures["cuda"]) < 0.05  # same seed; kernels differ slightly
