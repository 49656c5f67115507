"""Evaluating checkpoints and running analyzers, against a real store and a real server: the
figures are rated by the tasks' thresholds, logged as eval runs under the evaluated run, and
a plugin's analyzer runs beside the built-ins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FAST, drop_task_file, mlflow_client, wait_until

from activelab import Analyzer, AnalyzerResult, hookimpl, keys
from activelab.errors import TrainingError
from activelab.evaluation import MetricRow, evaluate_run, rate, recent_evaluations, run_analyzer
from activelab.panel_app.context import AppContext
from activelab.panel_app.pages.evaluate import grid_image
from activelab.panel_app.vm.evaluate import EvaluateViewModel
from activelab.panel_app.vm.state import AppState


def _train(lab, unique):
    """A model trained for 2 epochs, a checkpoint each (an evaluation follows the run's end)."""
    model = lab.create_model(f"{unique}-eval", config={**FAST, "trainer.checkpoint_every": "1"})
    model.set_labels({i: i % 10 for i in range(40)})
    # in this process: what is tested is the evaluation, not the worker's start
    handle = model.launch(epochs=2, system_metrics=False, in_process=True)
    assert handle.wait(timeout=300, follow_ups=True) == "FINISHED", handle.summary.error
    return model, handle.run_id


@pytest.fixture
def trained(lab, unique):
    """On the local store and through the server (what crosses the wire)."""
    return _train(lab, unique)


@pytest.fixture
def trained_locally(local_lab, unique):
    """On the local store only: what is tested runs in this process either way."""
    return _train(local_lab, unique)


def test_thresholds_rate_figures():
    assert rate(0.95, (0.9, 0.6, True)) == "good"
    assert rate(0.7, (0.9, 0.6, True)) == "moderate"
    assert rate(0.5, (0.9, 0.6, True)) == "poor"
    assert rate(0.01, (0.02, 0.06, False)) == "good"
    assert rate(0.1, (0.02, 0.06, False)) == "poor"
    assert rate(0.5, None) == "" and rate(float("nan"), (0.9, 0.6, True)) == ""


def test_a_finished_run_is_evaluated_and_evaluations_are_logged(trained):
    model, run_id = trained
    client = mlflow_client(model.lab)
    automatic = recent_evaluations(model, run_id)
    assert len(automatic) == 1, "every finished run gets an evaluation"
    again = evaluate_run(model, run_id, "epoch-0002.pt")
    rows = {(r.task, r.metric): r for r in again.rows}
    accuracy = rows["classification", "labeled_accuracy"]
    assert isinstance(accuracy, MetricRow) and 0 <= accuracy.value <= 1
    assert accuracy.rating in ("good", "moderate", "poor")  # the task declares thresholds
    assert rows["reconstruction", "mse"].rating
    # held-out figures are rated like the same figure in training; kl's dimensions in use too
    assert rows["validation", "reconstruction/mse"].rating
    assert rows["kl", "active_dims"].rating
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


def test_analyzers_built_in_and_from_a_plugin_log_their_tables(trained_locally):
    trained = trained_locally
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
    listed = {f.path for f in mlflow_client(model.lab).list_artifacts(run_id, "analyzers")}
    assert {
        "analyzers/confusion_matrix.csv",
        "analyzers/confusion_matrix.html",
        "analyzers/most_common_prediction.csv",
    } <= listed


def test_latent_over_checkpoints_scores_and_draws_every_checkpoint(trained_locally):
    trained = trained_locally
    from activelab.runs import list_checkpoints

    model, run_id = trained
    checkpoints = [p.rsplit("/", 1)[-1] for p in list_checkpoints(model.lab.tracking, run_id)]
    assert len(checkpoints) == 2
    heard = []
    result = run_analyzer(
        model, run_id, "latent_over_checkpoints", progress=lambda *a: heard.append(a)
    )
    assert heard == [(0, 2, "epoch-0001.pt"), (1, 2, "epoch-0002.pt"), (2, 2, "drawing")]
    table = result.table
    assert list(table.index) == checkpoints
    assert table["nearest_centroid_accuracy"].between(0, 1).all()
    assert (table["separation"] > 0).all()
    # the last checkpoint's classifier agrees with the per-class analyzer of that checkpoint
    per_class = run_analyzer(model, run_id, "per_class_accuracy").table
    assert table["classifier_accuracy"].iloc[-1] == pytest.approx(
        per_class["correct"].sum() / per_class["samples"].sum(), abs=1e-4
    )
    image = result.image
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    colors = {tuple(c) for c in image.reshape(-1, 3)[::7].tolist()}
    assert (31, 119, 180) in colors and (255, 127, 14) in colors  # classes 0 and 1 drawn
    listed = {f.path for f in mlflow_client(model.lab).list_artifacts(run_id, "analyzers")}
    assert {f"analyzers/latent_over_checkpoints.{ext}" for ext in ("csv", "png", "html")} <= listed
    page = mlflow_client(model.lab).download_artifacts(
        run_id, "analyzers/latent_over_checkpoints.html"
    )
    assert "data:image/png;base64," in Path(page).read_text()  # viewable alone in MLflow


def test_analyzer_progress_reads_as_time_left():
    from activelab.panel_app.pages.evaluate import eta_text

    assert eta_text(10.0, 0, 6) == ""  # nothing done yet: no basis for a guess
    assert eta_text(10.0, 2, 6) == " · about 0:20 left"
    assert eta_text(10.0, 6, 6) == ""


def test_separation_figures_and_checkpoint_spread():
    from activelab.tasks.analyzers import separation_figures, spread

    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(3), 200)
    apart = rng.normal(size=(600, 2)) * 0.1 + np.array([[0, 0], [5, 0], [0, 5]])[classes]
    mixed = rng.normal(size=(600, 2))
    clear, muddled = separation_figures(apart, classes), separation_figures(mixed, classes)
    assert clear["nearest_centroid_accuracy"] == 1.0
    assert muddled["nearest_centroid_accuracy"] < 0.6
    assert clear["separation"] > 10 * muddled["separation"]
    unlabeled = np.full(600, -1)
    assert np.isnan(separation_figures(apart, unlabeled)["separation"])
    names = tuple(f"epoch-{i:04d}.pt" for i in range(1, 21))
    picked = spread(names, 6)
    assert len(picked) == 6 and picked[0] == names[0] and picked[-1] == names[-1]
    assert spread(names[:3], 6) == list(names[:3])


def test_evaluate_view_model_grid_and_summary(trained_locally):
    trained = trained_locally
    model, run_id = trained
    vm = EvaluateViewModel(AppState(AppContext(model.lab)))
    runs = vm.load(model.id)
    assert [r.run_id for r in runs] == [run_id] and vm.run_id == run_id
    assert vm.checkpoints() == ["checkpoints/epoch-0001.pt", "checkpoints/epoch-0002.pt"]
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


def test_an_analyzer_dropped_into_a_task_folder_appears_on_the_evaluate_page(
    trained_locally, tmp_path
):
    from activelab import Lab
    from activelab.panel_app.pages.evaluate import EvaluatePage

    model, run_id = trained_locally
    folder = tmp_path / "tasks"
    folder.mkdir()
    lab = Lab(
        tracking_uri=model.lab.settings.tracking_uri, home=model.lab.settings.home,
        tasks_dirs=[folder],
    )  # fmt: skip
    context = AppContext(lab)
    context.start_watching()  # as the app does: the folder is followed
    try:
        state = AppState(context, model_id=model.id)
        page = EvaluatePage(state)
        page.shown()
        assert "count_only" not in page.analyzer.options.values()
        drop_task_file("count_only.py", folder)

        def listed() -> bool:
            page.poll()  # what the page does every second while shown
            return "count_only" in page.analyzer.options.values()

        wait_until(listed, timeout=30, message="the dropped analyzer in the page's picker")
        label = next(k for k, v in page.analyzer.options.items() if v == "count_only")
        assert "How many samples" in label
        result = run_analyzer(lab.get_model(model.id), run_id, "count_only")
        assert result.note == str(len(model.labels.as_array()))
    finally:
        context.stop()


def test_a_table_of_counts_is_shaded_by_value():
    import pandas as pd

    from activelab.panel_app.pages.evaluate import heat_styles

    matrix = pd.DataFrame({"true": ["0", "1"], "0": [9, 1], "1": [2, 8]})
    styles = heat_styles(matrix)
    assert styles[0][0] == "" and "white" in styles[0][1]  # the largest count stands out
    assert "white" not in styles[0][2] and "rgba(28,126,214,0.1" in styles[1][1]  # 1 of 9
    assert heat_styles(pd.DataFrame({"metric": ["a"], "note": ["text"]})) is None
