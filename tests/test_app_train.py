"""The Train page's view-models against a real store and a real `mlflow server`: editing the
task list, launching, stopping, continuing, retrying, and following a run's curves."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from helpers import FAST, drop_task_file, mlflow_client, wait_until

from activelab import keys
from activelab.errors import InvalidConfigError
from activelab.mlflow_server import free_port
from activelab.panel_app.context import AppContext
from activelab.panel_app.vm.monitor import RunMonitor, smooth, trend
from activelab.panel_app.vm.state import AppState
from activelab.panel_app.vm.train import TrainViewModel


@pytest.fixture
def train(lab, unique) -> TrainViewModel:
    model = lab.create_model(f"{unique}-train", config=FAST)
    state = AppState(AppContext(lab), model_id=model.id)
    vm = TrainViewModel(state)
    vm.load(model.id)
    return vm


def test_smoothing_and_trend_are_plain_functions():
    assert smooth([1.0, 2.0, 3.0], 0) == [1.0, 2.0, 3.0]
    smoothed = smooth([10.0] * 5 + [0.0] * 5, 0.6)
    assert smoothed[0] == pytest.approx(10.0)  # debiased: no pull towards zero at the start
    assert 0 < smoothed[-1] < 1 and smoothed == sorted(smoothed, reverse=True)
    assert trend([5.0, 4.0, 3.0, 2.0, 1.0, 0.5]) == "falling"
    assert trend([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]) == "flat"
    assert trend([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == "rising"
    assert trend([1.0]) == ""


def test_the_step_plot_fits_the_curves_after_their_first_steps():
    from activelab.panel_app.pages.curves import CurvePlot, fitted_range
    from activelab.tracking import MetricSeries

    spike = np.array([400.0, 150.0, 60.0] + [30.0 - i * 0.5 for i in range(37)])
    low, high = fitted_range([spike, np.array([5.0] * 40)])
    assert low < 5.0 and 30.0 <= high < 60.0  # the first steps' spike is left out
    assert fitted_range([np.array([1.0, 9.0])]) == pytest.approx((0.6, 9.4))  # few: all
    plot = CurvePlot("Loss per step", "step", "train-steps")
    series = MetricSeries("loss/total", list(range(40)), list(spike), [0] * 40)
    plot.show({"loss/total": series}, 0, smoothing=0.0, log=False)
    assert plot.pane.object.y_range.end < 60.0
    grown = MetricSeries("loss/total", [40], [90.0], [0])  # a later rise widens the range
    whole = MetricSeries("loss/total", list(range(41)), [*spike, 90.0], [0] * 41)
    plot.extend({"loss/total": grown}, {"loss/total": whole}, 0)
    assert plot.pane.object.y_range.end > 90.0
    plot.show({"loss/total": series}, 0, smoothing=0.0, log=True)  # log: Bokeh fits it
    assert type(plot.pane.object.y_range).__name__ == "DataRange1d"


def test_task_list_edits_are_saved_and_bad_ones_refused(train):
    model = train.model
    assert [t.name for t in train.config.tasks] == ["reconstruction", "kl", "classification", "map"]
    train.add_task("kl", name="kl_first", weight=0.5, latent_slice="0:1")
    train.set_task_field("kl_first", "enabled", False)
    train.set_trainer_param("lr", 5e-4)
    saved = model.lab.get_model(model.id).config  # read back from MLflow
    task = saved.task("kl_first")
    assert (task.weight, task.enabled, task.latent_slice) == (0.5, False, "0:1")
    assert saved.trainer_params["lr"] == 5e-4
    with pytest.raises(InvalidConfigError, match="latent"):
        train.set_task_field("kl_first", "latent_slice", "0:17")  # past the 16-D latent
    with pytest.raises(InvalidConfigError, match="already has a task"):
        train.add_task("kl", name="kl_first")
    train.remove_task("kl_first")
    train.apply_preset("classification")
    saved = model.lab.get_model(model.id).config
    assert [t.name for t in saved.tasks] == ["reconstruction", "kl", "classification", "map"]
    assert saved.task("classification").weight == 3 and saved.task("reconstruction").weight == 10
    assert "kl_first" not in {t.name for t in saved.tasks}


def test_problems_are_found_before_anything_starts(train):
    assert train.problems() == []
    for task in train.config.tasks:
        train.set_task_field(task.name, "enabled", False)
    assert any("enable at least one task" in p for p in train.problems())
    with pytest.raises(InvalidConfigError, match="enable at least one task"):
        train.start()
    assert train.model.runs() == []  # nothing started
    # the default length for the data set (digits: 47 epochs)
    assert train.run_name_preview().endswith(f"#1 · {train.model.default_epochs()} epochs")


# the lifecycle on the team's server; test_training covers it on both stores
@pytest.mark.parametrize("tracking_uri", ["server"], indirect=True)
def test_start_follow_stop_continue_and_retry(train):
    train.model.set_labels({i: i % 10 for i in range(40)})
    train.epochs = 400  # long enough to be stopped
    first = train.start()
    assert train.run_id == first.run_id and train.running().run_id == first.run_id
    monitor = RunMonitor(train.lab.tracking, first.run_id)
    monitor.load()

    def grew() -> int:
        monitor.poll()
        total = monitor.curves.get("loss/total")
        return total is not None and len(total) >= 20 and len(total)

    wait_until(grew, timeout=120, message="the live loss curve to grow")
    seen = len(monitor.curves["loss/total"])
    wait_until(
        lambda: monitor.poll() and len(monitor.curves["loss/total"]) > seen,
        timeout=60,
        message="more points",
    )
    live = monitor.figures()
    assert live.status == "RUNNING" and 0 < live.fraction < 1
    assert live.steps_per_s and live.eta_s is not None and live.current_loss is not None
    steps = monitor.curves["loss/total"].steps
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # no point twice

    train.stop()
    assert first.wait(timeout=120) == "KILLED"
    monitor.poll()
    history = mlflow.MlflowClient(train.lab.tracking.uri).get_metric_history(
        first.run_id, "loss/total"
    )
    assert monitor.curves["loss/total"].steps[-1] == history[-1].step  # nothing missed
    assert {r["metric"] for r in monitor.rows()} >= {"loss/total", "loss/kl"}

    train.epochs = 1
    checkpoints = train.checkpoints(first.run_id)
    assert checkpoints, "a stopped run keeps a checkpoint"
    second = train.continue_from(first.run_id, checkpoints[-1])
    assert second.wait(timeout=180) == "FINISHED"
    lineage = mlflow_client(train.lab).get_run(second.run_id).data.tags
    assert lineage["mlflow.parentRunId"] == first.run_id
    train.refresh_history()
    assert [r.run_id for r in train.history[:2]] == [second.run_id, first.run_id]
    assert [r.status for r in train.history[:2]] == ["FINISHED", "KILLED"]

    again = train.retry(second.run_id)  # same epochs, from the same checkpoint
    assert again.wait(timeout=180) == "FINISHED"
    retried = mlflow_client(train.lab).get_run(again.run_id).data
    assert retried.tags["activelab.parent_run"] == first.run_id
    assert retried.params["epochs"] == "1"


@pytest.mark.parametrize("tracking_uri", ["local"], indirect=True)
def test_the_next_run_goes_to_the_backend_picked(train):
    train.lab.plugins.load_file(
        drop_task_file("child_backend.py", train.lab.settings.home / "tasks")
    )
    kinds = list(train.backend_kinds())
    assert kinds[0] == "local" and {"ray", "child"} <= set(kinds)
    assert train.backend_takes() == set()  # nothing to ask for this machine

    train.backend = "ray"
    assert train.backend_takes() == {"address", "cpus", "gpus"}
    train.backend_address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    train.backend_cpus = 1
    with pytest.raises(InvalidConfigError, match="Cannot reach the Ray cluster"):
        train.start()
    assert train.model.runs() == [], "refused before any run exists"

    train.backend, train.epochs = "child", 1
    first = train.start()
    assert first.wait(timeout=180) == "FINISHED"
    assert first.run.data.tags[keys.BACKEND] == "child"
    train.backend = "local"
    again = train.retry(first.run_id)  # where the run ran, whatever is picked now
    assert again.wait(timeout=180) == "FINISHED"
    assert again.run.data.tags[keys.BACKEND] == "child"


def test_the_monitor_follows_a_run_logged_by_any_script(lab, unique):
    """A run from another process or machine: the monitor needs nothing but MLflow."""
    model = lab.create_model(f"{unique}-scripted")
    client = mlflow_client(lab)
    run = client.create_run(model.id, run_name="scripted")
    metrics = [  # more points than the monitor keeps on screen
        mlflow.entities.Metric(key, 10.0 / step, 1_700_000_000_000 + step, step)
        for step in range(1, 3001)
        for key in ("loss/total", "loss/kl")
    ]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
    monitor = RunMonitor(lab.tracking, run.info.run_id, max_points=500)
    monitor.load()
    total = monitor.curves["loss/total"]
    assert len(total) <= 500 and total.steps[0] == 1 and total.steps[-1] == 3000
    assert monitor.figures().trend == "falling"
    client.log_batch(
        run.info.run_id,
        metrics=[mlflow.entities.Metric("loss/total", 0.001, 1_700_000_010_000, 3001)],
    )
    fresh = monitor.poll()
    assert fresh["loss/total"].steps == [3001] and "loss/kl" not in fresh
    assert monitor.curves["loss/total"].steps[-1] == 3001
