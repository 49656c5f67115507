"""The app's view-models, driven directly against a real store (no server, no browser)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FAST, mlflow_client, wait_until

from activelab import Lab
from activelab.errors import ModelExistsError, NothingToUndoError
from activelab.panel_app.context import AppContext
from activelab.panel_app.pages.home import accuracy_html
from activelab.panel_app.vm.home import HomeViewModel, system_status
from activelab.panel_app.vm.label import LabelViewModel
from activelab.panel_app.vm.plugins import PluginsViewModel
from activelab.panel_app.vm.state import AppState


@pytest.fixture
def state(local_lab) -> AppState:
    return AppState(AppContext(local_lab))


def test_home_cards_filter_and_actions(state):
    home = HomeViewModel(state)
    home.refresh()
    assert home.loaded and home.cards == []
    alpha = home.create("alpha", "first try", "high_recon", "digits")
    home.create("beta")
    assert [c.name for c in home.cards] == ["beta", "alpha"]  # newest first
    assert alpha.preset == "high_recon" and alpha.description == "first try"
    home.query = "ALP"
    assert [c.name for c in home.visible_cards] == ["alpha"]
    state.lab.get_model("beta").set_tags({"team": "vision"})
    home.refresh()
    home.query = "team=vision"
    assert [c.name for c in home.visible_cards] == ["beta"]  # by tag
    home.query = "digits vision"
    assert [c.name for c in home.visible_cards] == ["beta"]  # every word must match
    home.query = ""
    with pytest.raises(ModelExistsError):
        home.create("beta")
    home.rename(alpha.id, "alpha-2")
    state.model_id = alpha.id
    home.delete(alpha.id)
    assert state.model_id == ""  # the model in use is gone
    assert [c.name for c in home.cards] == ["beta"]
    assert home.restore(alpha.id).name == "alpha-2"
    assert {c.name for c in home.cards} == {"alpha-2", "beta"}


def test_quick_start_labels_a_few_samples_and_trains(state):
    home = HomeViewModel(state)
    home.refresh()
    card, run_id = home.quick_start()
    assert card.name == "quick-start" and card.labeled_count == 30
    client = mlflow_client(state.lab)
    wait_until(
        lambda: client.get_run(run_id).info.status == "FINISHED",
        timeout=240,
        message="the quick-start run",
    )
    home.refresh()
    assert home.recent_runs[0][0] == "quick-start"
    assert home.recent_runs[0][1].status == "FINISHED"
    # the card carries the accuracy on the unlabeled samples and its trend over the epochs
    trained = next(c for c in home.cards if c.id == card.id)
    run = client.get_run(run_id)
    final = run.data.metrics["eval/classification/unlabeled_accuracy"]
    assert trained.latest_accuracy is not None and len(trained.accuracy_trend) >= 2
    assert abs(trained.accuracy_trend[-1] - trained.latest_accuracy) < 1e-3
    assert 0 <= trained.latest_accuracy <= 1 and 0 <= final <= 1
    assert "%" in accuracy_html(trained) and "<svg" in accuracy_html(trained)
    second, _ = home.quick_start()
    assert second.name == "quick-start-2"
    assert state.lab.get_model(second.id).runs(), "its training started too"


def test_system_status_has_cpu_and_memory():
    status = system_status()
    assert status["cpus"] >= 1 and 0 <= status["memory_percent"] <= 100
    assert isinstance(status["gpus"], list)


@pytest.fixture
def loaded(state):
    model = state.lab.create_model("to-label", config=FAST)
    vm = LabelViewModel(state)
    vm.load(model.id)
    return vm, model


def test_label_map_of_an_untrained_model(loaded):
    vm, _model = loaded
    assert vm.ready and vm.source_run == ""
    columns = vm.columns()
    assert columns["x"].dtype == np.float32 and len(columns["x"]) == 1797
    assert columns["label"].dtype == np.int8 and (columns["label"] == -1).all()
    assert set(columns) == {"x", "y", "label", "predicted", "certainty", "true"}
    assert vm.has_truth and vm.classes == tuple("0123456789")
    original, reconstruction = vm.images(5)
    assert original.shape == reconstruction.shape == (1, 8, 8)
    assert vm.describe(5)["true"] == "5"


def test_labeling_undo_redo_and_strategies(loaded, state):
    vm, model = loaded
    vm.selected = [10, 11, 12]
    assert vm.label_selection(3) == 3
    assert vm.last_change == {10: 3, 11: 3, 12: 3} and vm.labels_version == 1
    assert model.labels.as_dict() == {10: 3, 11: 3, 12: 3}  # saved in MLflow
    assert vm.can_undo and not vm.can_redo
    vm.current, vm.selected = 12, []
    assert vm.label_selection("4") == 1  # the clicked sample, by class name
    assert vm.undo() == 1 and vm.labels[12] == 3
    assert vm.redo() == 1 and vm.labels[12] == 4
    vm.selected = [10]
    assert vm.clear_selection() == 1 and vm.last_change == {10: -1}
    assert vm.label_counts()["3"] == 1 and vm.label_counts()["4"] == 1
    vm.next_count = 5
    picked = vm.next_to_label()
    assert len(picked) == 5 and not set(picked) & {11, 12} and vm.selected == picked
    vm.strategy = "coreset"  # diversity in the latent map the page shows
    spread = vm.next_to_label()
    assert len(set(spread)) == 5 and not set(spread) & {11, 12}
    xy = vm.latent[spread]
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=2)[np.triu_indices(5, 1)]
    assert gaps.min() > 0  # five different places
    while vm.can_undo:
        vm.undo()
    with pytest.raises(NothingToUndoError):
        vm.undo()


def test_the_queue_labels_one_sample_at_a_time_and_moves_on(loaded):
    vm, model = loaded
    vm.next_count = 4
    queue = vm.start_queue()
    assert len(queue) == 4 and vm.in_queue and vm.current == queue[0] and vm.selected == [queue[0]]
    assert vm.label_in_queue(2) == 1  # labels the shown sample, then shows the next
    assert model.labels.as_dict() == {queue[0]: 2} and vm.current == queue[1]
    vm.move_in_queue(1)  # skip one
    assert vm.current == queue[2]
    assert vm.label_in_queue("7") == 1 and vm.current == queue[3]
    assert vm.undo_in_queue() == 1  # back to the sample it unlabeled
    assert vm.current == queue[2] and queue[2] not in model.labels.as_dict()
    for label in (5, 6):
        vm.label_in_queue(label)
    assert vm.queue_done and vm.current is None and vm.label_in_queue(1) == 0
    assert model.labels.as_dict() == {queue[0]: 2, queue[2]: 5, queue[3]: 6}
    vm.stop_queue()
    assert not vm.in_queue and vm.selected == []


def test_the_gallery_shows_the_selection_sorted_by_certainty(loaded):
    vm, model = loaded
    vm.selected = [5, 6, 7, 8]
    # the untrained model's classes mean nothing: no certainty is shown
    assert [t["certainty"] for t in vm.gallery()] == [None] * 4
    model.set_labels({0: 0, 1: 1})
    handle = model.launch(epochs=1, wait=True, system_metrics=False, in_process=True)
    assert handle.status == "FINISHED", handle.summary.error
    vm.load(model.id)
    vm.selected = [5, 6, 7, 8]
    assert [t["index"] for t in vm.gallery()] == [5, 6, 7, 8]  # as picked
    vm.gallery_order = "least_certain"
    least = vm.gallery()
    values = [t["certainty"] for t in least]
    assert values == sorted(values) and {t["index"] for t in least} == {5, 6, 7, 8}
    vm.gallery_order = "most_certain"
    assert [t["certainty"] for t in vm.gallery()] == sorted(values, reverse=True)


def test_labels_csv_export_and_import(loaded):
    from activelab.errors import LabelFileError

    vm, model = loaded
    vm.selected = [5, 6]
    vm.label_selection(2)
    exported = vm.labels_csv()
    assert exported.splitlines() == ["sample_index,label", "5,2", "6,2"]
    assert vm.import_csv("sample_index,label\n7,9\n5,1\n") == 2
    assert model.labels.as_dict() == {5: 1, 6: 2, 7: 9} and vm.labels[7] == 9
    assert vm.import_csv("sample_index,label\n7,9\n") == 0  # already so: no change
    with pytest.raises(LabelFileError, match="Line 3"):
        vm.import_csv("sample_index,label\n8,1\nnot-a-number,2\n")
    assert model.labels.get(8) is None  # a bad file changes nothing
    assert vm.undo() == 2 and model.labels.as_dict() == {5: 2, 6: 2}  # one undo, whole file


def test_labels_from_another_session_arrive(loaded, state):
    vm, model = loaded
    other = Lab(tracking_uri=state.lab.settings.tracking_uri, home=state.lab.settings.home)
    other.get_model(model.id).set_labels({100: 1, 101: 2})
    assert vm.refresh_labels() is True
    assert vm.last_change == {100: 1, 101: 2}
    assert vm.refresh_labels() is False


def test_the_map_follows_a_finished_run(loaded):
    vm, model = loaded
    before = vm.columns()["x"].copy()
    assert vm.check_for_new_run() is False
    handle = model.launch(epochs=1, wait=True, in_process=True)
    assert vm.check_for_new_run() is True
    assert vm.source_run == handle.run_id and vm.map_version == 2
    assert not np.array_equal(before, vm.columns()["x"])
    fresh = LabelViewModel(vm.state)
    fresh.load(model.id)  # a new session opens on the latest predictions
    assert fresh.source_run == handle.run_id


def test_the_label_page_says_what_to_do_when_the_map_does_not_help(loaded):
    vm, model = loaded
    assert "untrained model's" in vm.map_advice()  # no training yet: label, then train
    model.set_labels({i: i % 10 for i in range(40)})
    model.launch(epochs=1, wait=True, in_process=True)
    vm.load(model.id)  # the trained map, with the labels
    assert vm.source_run and (vm.labels >= 0).sum() == 40
    # a map that mixes the labeled classes: each labeled sample's neighbour is another class
    frame = vm.frame.copy()
    frame.loc[:, "z0"] = np.arange(len(frame), dtype=np.float32)
    frame.loc[:, "z1"] = 0.0
    vm.frame = frame
    advice = vm.map_advice()
    assert "does not separate your classes yet: 0% of the labeled samples" in advice
    # a map that groups them, with a sure model: nothing to say
    grouped = (vm.labels % 10) * 100.0 + np.arange(len(frame)) * 1e-3
    frame["z0"] = grouped.astype(np.float32)
    frame.loc[:, "certainty"] = 0.9
    vm.frame = frame
    assert vm.map_advice() == ""


def test_plugins_view_model_sees_task_files(state, tmp_path):
    from helpers import drop_task_file

    vm = PluginsViewModel(state)
    assert vm.refresh() is True
    assert vm.refresh() is False  # nothing changed
    lab = Lab(
        tracking_uri=state.lab.settings.tracking_uri,
        home=state.lab.settings.home,
        tasks_dirs=[tmp_path / "tasks"],
    )
    drop_task_file("latent_norm.py", tmp_path / "tasks")
    assert "latent_norm" in lab.plugins.registry("tasks")  # loads the folder
    assert vm.refresh() is True
    assert any(r.registered.get("tasks") == ["latent_norm"] for r in vm.records)


def test_a_run_is_announced_by_its_own_status_not_by_a_tag_set_beside_it(local_lab, unique):
    """The experiment's latest-run tags are set one by one; a look between the two must not
    pair a new run with the old run's status (it once announced "finished" for a run that
    then failed, and the failure never)."""
    from helpers import logged_run

    from activelab import keys
    from activelab.panel_app.context import AppContext
    from activelab.panel_app.shell import Shell
    from activelab.panel_app.vm.state import AppState

    model = local_lab.create_model(unique)
    first = logged_run(local_lab, model, "0.001", 1.0)
    client = mlflow_client(local_lab)
    client.set_experiment_tag(model.id, keys.LATEST_RUN, first)
    client.set_experiment_tag(model.id, keys.LATEST_RUN_STATUS, "FINISHED")
    state = AppState(AppContext(local_lab), model_id=model.id)
    shell = Shell(state)
    shell.look_at_latest_run()  # the first look
    assert state.notices == 0

    failed = client.create_run(model.id, run_name="second", tags={keys.RUN_KIND: "train"})
    client.set_tag(failed.info.run_id, keys.ERROR, "out of memory")
    client.set_terminated(failed.info.run_id, "FAILED")
    client.set_experiment_tag(model.id, keys.LATEST_RUN, failed.info.run_id)
    shell.look_at_latest_run()  # a look between the two tags: the status tag is still the old run's
    client.set_experiment_tag(model.id, keys.LATEST_RUN_STATUS, "FAILED")
    shell.look_at_latest_run()
    assert state.notices == 1
    assert (state.notice.kind, state.notice.text) == (
        "error",
        "Training run “second” failed. out of memory",
    )


def test_a_run_that_ends_before_the_first_look_but_after_the_page_opened_is_announced(
    local_lab, unique
):
    """The first look runs in a thread and can come late on a busy machine: a run that
    ended meanwhile is still news; one that ended before the page opened is not."""
    from helpers import logged_run

    from activelab import keys
    from activelab.panel_app.context import AppContext
    from activelab.panel_app.shell import Shell
    from activelab.panel_app.vm.state import AppState

    model = local_lab.create_model(unique)
    client = mlflow_client(local_lab)
    old = logged_run(local_lab, model, "0.001", 1.0)
    client.set_experiment_tag(model.id, keys.LATEST_RUN, old)
    client.set_experiment_tag(model.id, keys.LATEST_RUN_STATUS, "FINISHED")
    state = AppState(AppContext(local_lab), model_id=model.id)
    Shell(state).look_at_latest_run()
    assert state.notices == 0, "a run over before the page opened is old news"

    state = AppState(AppContext(local_lab), model_id=model.id)
    shell = Shell(state)  # the page opens; its first look has not come yet
    failed = client.create_run(model.id, run_name="late", tags={keys.RUN_KIND: "train"})
    client.set_terminated(failed.info.run_id, "FAILED")
    client.set_experiment_tag(model.id, keys.LATEST_RUN, failed.info.run_id)
    client.set_experiment_tag(model.id, keys.LATEST_RUN_STATUS, "FAILED")
    shell.look_at_latest_run()  # the first look, late
    assert state.notices == 1
    assert (state.notice.kind, state.notice.text) == ("error", "Training run “late” failed.")


def test_a_poll_failing_while_the_server_stops_leaves_no_traceback(caplog):
    """While the app's process exits, a poll still running in a thread can fail (a thread pool
    refuses new work after its shutdown): nobody is left to see it, so it is not logged as a
    fault; the same failure while serving is."""
    from activelab.panel_app.pages.common import UiThread, process_stopping

    def refused() -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    failures: list[BaseException] = []
    ui = UiThread()
    with caplog.at_level("DEBUG", logger="activelab.panel_app.pages.common"):
        ui.background(refused, failed=failures.append).join(timeout=10)
        assert len(failures) == 1, "while serving, the page hears of the failure"
        assert any(r.levelname == "WARNING" and r.exc_info for r in caplog.records)
        caplog.clear()
        process_stopping.set()
        try:
            ui.background(refused, failed=failures.append).join(timeout=10)
        finally:
            process_stopping.clear()
    assert len(failures) == 1, "once stopping, nobody is told"
    assert [r.levelname for r in caplog.records] == ["DEBUG"], caplog.text
