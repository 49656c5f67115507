"""The Compare page's view-model against a real store and a real `mlflow server`: runs from
two models, overlaid by step / epoch / wall time, params diffed, final and best figures."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from helpers import STEPS_PER_EPOCH, logged_run, mlflow_client

from activelab.humanize import run_state
from activelab.panel_app.context import AppContext
from activelab.panel_app.vm.compare import CompareViewModel, higher_is_better
from activelab.panel_app.vm.state import AppState


@pytest.fixture
def compare(lab, unique) -> tuple[CompareViewModel, str, str]:
    first = lab.create_model(f"{unique}-a")
    second = lab.create_model(f"{unique}-b")
    a = logged_run(lab, first, "0.001", 1.0, {"team": "vision"})
    b = logged_run(lab, second, "0.0005", 0.5)
    vm = CompareViewModel(AppState(AppContext(lab)))
    vm.model_filter = [first.id, second.id]
    return vm, a, b


def test_runs_are_found_across_models_and_filtered(compare):
    vm, a, b = compare
    assert {c.summary.run_id for c in vm.find_runs()} == {a, b}
    vm.tag_filter = "team=vision"
    assert [c.summary.run_id for c in vm.find_runs()] == [a]
    vm.tag_filter = "no equals sign"
    with pytest.raises(ValueError, match="key=value"):
        vm.find_runs()
    vm.tag_filter, vm.status_filter = "", "FAILED"
    assert vm.find_runs() == []


def test_overlay_by_step_epoch_and_wall_time(compare):
    vm, a, b = compare
    vm.find_runs()
    vm.selected = [a, b]
    assert "loss/total" in vm.metric_keys() and "epoch" not in vm.metric_keys()
    vm.metrics = ["loss/total", "epoch/loss/total"]
    curves = vm.load_curves()
    assert len(curves) == 4
    by = {(c.run_id, c.metric): c for c in curves}
    assert list(by[a, "loss/total"].x[:3]) == [1, 2, 3]
    assert by[b, "loss/total"].y[0] == pytest.approx(0.5)
    vm.x_axis = "epoch"
    by = {(c.run_id, c.metric): c for c in vm.load_curves()}
    assert by[a, "loss/total"].x[STEPS_PER_EPOCH - 1] == pytest.approx(1.0)  # end of epoch 1
    assert by[a, "loss/total"].x[-1] == pytest.approx(3.0)
    assert list(by[a, "epoch/loss/total"].x) == [1, 2, 3]
    vm.x_axis = "wall"
    by = {(c.run_id, c.metric): c for c in vm.load_curves()}
    assert by[a, "loss/total"].x[0] == pytest.approx(0.1)  # seconds since the run started

    frame = vm.curves_frame()
    assert len(frame) == 2 * (30 + 3)
    assert set(frame["run_id"]) == {a, b} and "wall" in frame.columns
    out = io.StringIO()
    frame.to_csv(out, index=False)
    assert pd.read_csv(io.StringIO(out.getvalue()))["value"].notna().all()


def test_param_diff_and_final_best_figures(compare):
    vm, a, b = compare
    vm.find_runs()
    vm.selected = [a, b]
    diff = vm.params_table()
    assert list(diff["param"]) == ["trainer.lr"]  # batch size is the same in both
    vm.only_differing = False
    assert set(vm.params_table()["param"]) == {"trainer.lr", "trainer.batch_size"}
    vm.metrics = ["loss/total", "eval/classification/accuracy"]
    vm.load_curves()
    figures = vm.figures_table().set_index("run_id")
    assert figures.loc[a, "loss/total final"] == pytest.approx(1 / 30)
    assert figures.loc[a, "loss/total best"] == pytest.approx(1 / 30)
    assert figures.loc[b, "eval/classification/accuracy best"] == pytest.approx(0.65)
    assert figures.loc[a, "labels"] == 12 and figures.loc[a, "labels digest"] == "abc123def456"
    # the run's state in the app's words; both kinds of epochs, named
    assert figures.loc[a, "status"] == run_state(vm.candidate(a).summary.status)
    assert figures.loc[a, "status"] == figures.loc[a, "status"].lower()
    assert {"epochs (this run)", "epochs (lineage)"} <= set(figures.columns)
    assert higher_is_better("eval/classification/accuracy")
    assert not higher_is_better("val/loss/total")


def test_the_page_opens_on_the_latest_runs_of_the_model_in_use(lab, unique):
    import time

    from helpers import wait_until

    from activelab.panel_app.pages.compare import PICK_RUNS, ComparePage

    model = lab.create_model(f"{unique}-open")
    runs = []
    for lr in ("0.001", "0.002", "0.003"):  # same run names; distinct start times
        runs.append(logged_run(lab, model, lr, 0.5))
        started = mlflow_client(lab).get_run(runs[-1]).info.start_time
        wait_until(  # the next run starts on a later millisecond
            lambda started=started: time.time() * 1000 > started + 1, message="the clock to move"
        )
    newer = runs[1:]  # the two newest
    page = ComparePage(AppState(AppContext(lab), model_id=model.id))
    page.activate()
    assert set(page.runs.value) == set(newer)
    assert sorted(page.runs.options.values()) == sorted(runs)  # a shared name stays apart
    wait_until(lambda: page.plot.visible, timeout=30, message="the overlay of the two runs")
    assert {c.run_id for c in page.vm.curves} == set(newer)

    page.runs.value = []  # nothing chosen: the page says what to do
    assert PICK_RUNS in page.message.object and not page.plot.visible

    elsewhere = ComparePage(AppState(AppContext(lab)))  # no model in use: nothing is chosen
    elsewhere.activate()
    assert elsewhere.runs.value == [] and PICK_RUNS in elsewhere.message.object


def test_an_ended_run_is_read_once_and_again_only_when_it_changes(compare, lab):
    """Adding a run, switching the axis or reopening the page reads only what is new: the
    curves of ended runs come from memory, until the run's latest figures move."""
    from mlflow.entities import Metric

    vm, a, b = compare
    vm.find_runs()
    vm.selected = [a]
    vm.load_curves()
    memo = lab.tracking.ended_histories
    assert memo.hits == 0
    vm.selected = [a, b]  # one more run: only b is read
    vm.load_curves()
    assert memo.hits == 1
    reopened = CompareViewModel(AppState(AppContext(lab)))  # a new page, same process
    reopened.find_runs()
    reopened.selected = [a, b]
    assert len(reopened.load_curves()) == 2 and memo.hits == 3

    # a late point moves b's latest figure: b is read again and shows it
    run = mlflow_client(lab).get_run(b)
    mlflow_client(lab).log_batch(b, metrics=[Metric("loss/total", 0.01, run.info.end_time, 10_000)])
    curves = {c.run_id: c for c in reopened.load_curves()}
    assert memo.hits == 4 and curves[b].step[-1] == 10_000
    assert list(curves[a].step) == list({c.run_id: c for c in vm.curves}[a].step)

    # a run that is still running is never served from memory
    live = mlflow_client(lab).create_run(lab.get_model(vm.model_filter[0]).id, run_name="live")
    mlflow_client(lab).log_batch(live.info.run_id, metrics=[Metric("loss/total", 1.0, 0, 1)])
    reopened.selected = [live.info.run_id]
    reopened.load_curves()
    mlflow_client(lab).log_batch(live.info.run_id, metrics=[Metric("loss/total", 0.5, 1, 2)])
    (curve,) = reopened.load_curves()
    assert list(curve.step) == [1, 2]
