"""Evaluating checkpoints and running analyzers, against a real store and a real server: the
figures are rated by the tasks' thresholds, logged as eval runs under the evaluated run, and
a plugin's analyzer runs beside the built-ins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import FAST

from activelab import Analyzer, AnalyzerResult, hookimpl, keys
from activelab.errors import TrainingError
from activelab.evaluation import MetricRow, evaluate_run, rate, recent_evaluations, run_analyzer
from activelab.panel_app.context import AppContext
from activelab.panel_app.pages.evaluate import grid_image
from activelab.panel_app.vm.evaluate import EvaluateViewModel
from activelab.panel_app.vm.state import AppState


@pytest.fixture
def trained(lab, unique):
    """A model trained for 2 epochs (its run ends with an automatic evaluation)."""
    model = lab.create_model(f"{unique}-eval", config=FAST)
    model.set_labels({i: i % 10 for i in range(40)})
    handle = model.launch(epochs=2, wait=True, system_metrics=False)
    assert handle.status == "FINISHED", handle.summary.error
    return model, handle.run_id


def test_thresholds_rate_figures():
    assert rate(0.95, (0.9, 0.6, True)) == "good"
    assert rate(0.7, (0.9, 0.6, True)) == "moderate"
    assert rate(0.5, (0.9, 0.6, True)) == "poor"
    assert rate(0.01, (0.02, 0.06, False)) == "good"
    assert rate(0.1, (0.02, 0.06, False)) == "poor"
    assert rate(0.5, None) == "" and rate(float("nan"), (0.9, 0.6, True)) == ""


def test_a_finished_run_is_evaluated_and_evaluations_are_logged(trained):
    model, run_id = trained
    client = model.lab.tracking.client
    automatic = recent_evaluations(model, run_id)
    assert len(automatic) == 1, "every finished run gets an evaluation"
    again = evaluate_run(model, run_id, "epoch-0002.pt")
    rows = {(r.task, r.metric): r for r in again.rows}
    accuracy = rows["classification", "labeled_accuracy"]
    assert isinstance(accuracy, MetricRow) and 0 <= accuracy.value <= 1
    assert accuracy.rating in ("good", "moderate", "poor")  # the task declares thresholds
    assert rows["reconstruction", "mse"].rating
    assert ("validation", "loss/total") in rows
    # in MLflow: an eval run nested under the evaluated run, with the figures as metrics
    logged = client.get_run(again.eval_run_id)
    assert logged.data.tags["mlflow.parentRunId"] == run_id
    assert logged.data.tags[keys.RUN_KIND] == "eval"
    assert logged.data.metrics["eval/classification/labeled_accuracy"] == pytest.approx(
        accuracy.value
    )
    history = recent_evaluations(model, run_id)
    assert history[0].eval_run_id == again.eval_run_id and len(history) == 2
    # the same checkpoint gives the same figures
    assert history[1].figures["val/loss/total"] == pytest.approx(again.figures["val/loss/total"])
    # training runs stay what the job history lists
    assert [r.run_id for r in model.runs()] == [run_id]
    with pytest.raises(TrainingError, match="no checkpoint 'epoch-0009.pt'.*epoch-0002.pt"):
        evaluate_run(model, run_id, "epoch-0009.pt")


class MostCommonPrediction(Analyzer):
    """The class the checkpoint predicts most often."""

    kind = "most_common_prediction"

    def analyze(self, inputs):
        counts = np.bincount(inputs.predictions["predicted"].to_numpy(), minlength=1)
        table = pd.DataFrame({"predictions": counts})
        return AnalyzerResult("Most common prediction", table, f"{int(counts.argmax())}")


class AnalyzerPlugin:
    @hookimpl
    def register_analyzers(self, register):
        register(MostCommonPrediction)


def test_analyzers_built_in_and_from_a_plugin_log_their_tables(trained):
    model, run_id = trained
    host = model.lab.plugins
    plugin = AnalyzerPlugin()
    host.pm.register(plugin, name="test-analyzer")
    host._generation += 1  # what loading a plugin does, so the registry is read again
    try:
        assert {"confusion_matrix", "per_class_accuracy", "most_common_prediction"} <= set(
            host.registry("analyzers")
        )
        matrix = run_analyzer(model, run_id, "confusion_matrix").table
        assert matrix.shape == (10, 10) and matrix.to_numpy().sum() == 1797
        per_class = run_analyzer(model, run_id, "per_class_accuracy").table
        assert per_class["samples"].sum() == 1797 and per_class["labeled"].sum() == 40
        mine = run_analyzer(model, run_id, "most_common_prediction")
        assert mine.table["predictions"].sum() == 1797
    finally:
        host.pm.unregister(plugin)
        host._generation += 1
    listed = {f.path for f in model.lab.tracking.client.list_artifacts(run_id, "analyzers")}
    assert {
        "analyzers/confusion_matrix.csv",
        "analyzers/confusion_matrix.html",
        "analyzers/most_common_prediction.csv",
    } <= listed


def test_evaluate_view_model_grid_and_summary(trained):
    model, run_id = trained
    vm = EvaluateViewModel(AppState(AppContext(model.lab)))
    runs = vm.load(model.id)
    assert [r.run_id for r in runs] == [run_id] and vm.run_id == run_id
    assert vm.checkpoints() == ["checkpoints/epoch-0002.pt"]
    names, rows = vm.reconstruction_grid()
    assert names == [str(c) for c in range(10)]
    assert rows[0].shape == (8, 2, 1, 8, 8)  # 8 samples x (original, reconstruction)
    first = [r.copy() for r in rows]
    vm.seed += 1
    _, other = vm.reconstruction_grid()
    assert not np.array_equal(first[0], other[0])  # refreshed: other samples
    vm.seed -= 1
    _, same = vm.reconstruction_grid()
    assert np.array_equal(first[0], same[0])  # seeded: the same samples again
    vm.difference = True
    _, with_diff = vm.reconstruction_grid()
    assert with_diff[0].shape[1] == 3
    assert grid_image(with_diff).shape[0] == 1
    summary = vm.model_summary()
    assert "network.encoder" in summary and "total" in summary
    evaluation = vm.evaluate()
    assert vm.history()[0].eval_run_id == evaluation.eval_run_id
