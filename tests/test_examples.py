"""The examples work: the installed plugin package and the drop-in task file train."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import FAST
from mlflow import MlflowClient

from activelab import Lab

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_installed_plugin_task_trains_and_its_hooks_fire(local_lab, unique, tmp_path, monkeypatch):
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("ACTIVELAB_EXAMPLE_EVENTS", str(events))  # inherited by the worker
    model = local_lab.create_model(unique, config={**FAST, "trainer.checkpoint_every": "1"})
    model.add_task("decorrelation", weight=5.0)
    handle = model.launch(epochs=2, wait=True)
    assert handle.status == "FINISHED"
    history = MlflowClient(local_lab.settings.tracking_uri).get_metric_history(
        handle.run_id, "loss/decorrelation"
    )
    assert len(history) > 0
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in seen] == [
        "train_start",
        "epoch_end",
        "checkpoint_saved",
        "epoch_end",
        "checkpoint_saved",
        "train_end",
    ]
    assert seen[-1]["status"] == "FINISHED" and seen[0]["run_id"] == handle.run_id


def test_drop_in_task_file_trains_and_edits_reach_the_next_run(local_uri, tmp_path, unique):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    dropped = tasks / "drop_in_task.py"
    shutil.copyfile(EXAMPLES / "drop_in_task.py", dropped)
    lab = Lab(tracking_uri=local_uri, home=tmp_path / "home", tasks_dirs=[tasks])
    model = lab.create_model(unique, config=FAST)
    model.add_task("latent_norm", weight=0.5, latent_slice="0:1")
    first = model.launch(epochs=1, wait=True)
    assert first.status == "FINISHED"
    assert "eval/latent_norm/mean_norm" in first.metrics
    dropped.write_text(dropped.read_text().replace('"mean_norm"', '"mean_norm_v2"'))
    second = model.launch(epochs=1, wait=True)  # a new worker imports the edited file
    assert "eval/latent_norm/mean_norm_v2" in second.metrics


def test_active_learning_loop_example_labels_and_continues(local_uri, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": local_uri, "ACTIVELAB_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "active_learning_loop.py"), "--rounds", "2",
         "--per-round", "15", "--epochs", "2", "--strategy", "diverse_margin",
         "--set", "trainer.hidden_dims=[32]"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 1:   10 labels" in done.stdout and "round 2:   25 labels" in done.stdout
    lab = Lab(tracking_uri=local_uri, home=tmp_path)
    (model,) = lab.list_models()
    first, second = sorted(lab.get_model(model.id).runs(), key=lambda r: r.started)
    assert second.parent_run == first.run_id  # each round continues the one before
    assert (first.labeled_count, second.labeled_count) == (10, 25)
    assert second.lineage_epochs == 4
