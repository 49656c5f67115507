"""Labels: durable, atomic, per model, with undo/redo, CSV and clear errors."""

from __future__ import annotations

import json

import pytest

from activelab.errors import InvalidLabelError, LabelFileError, NothingToUndoError
from activelab.labels import LOG_DIR, SNAPSHOT_DIR, SNAPSHOT_EVERY, LabelEvent


@pytest.fixture
def model(lab, unique):
    return lab.create_model(unique)


def reopen(lab, model):
    """The model as a fresh process would see it (no cached label state)."""
    from activelab import Lab

    return Lab(tracking_uri=lab.settings.tracking_uri, home=lab.settings.home).get_model(model.id)


def test_set_change_clear_one_sample(lab, model):
    model.set_label(10, "3")
    assert model.labels.get(10) == 3
    model.set_label(10, 4)  # by class index
    assert reopen(lab, model).labels.as_dict() == {10: 4}
    model.clear_label(10)
    assert reopen(lab, model).labels.as_dict() == {}


def test_set_many_at_once_is_one_change(lab, model):
    event = model.set_labels(range(100, 150), "7")
    assert len(event.changes) == 50
    model.set_labels({1: "1", 2: "2"})
    fresh = reopen(lab, model)
    assert fresh.labels.count == 52
    assert fresh.labels.stats()["7"] == 50
    fresh.labels.undo()  # undo takes back the whole {1, 2} change
    assert reopen(lab, model).labels.count == 50


def test_undo_and_redo(lab, model):
    model.set_label(1, 1)
    model.set_label(1, 2)
    model.set_label(5, 5)
    store = model.labels
    store.undo()
    assert store.as_dict() == {1: 2}
    store.undo()
    assert store.as_dict() == {1: 1}
    store.redo()
    assert reopen(lab, model).labels.as_dict() == {1: 2}
    model.set_label(9, 9)  # a new change ends the redo history
    with pytest.raises(NothingToUndoError, match="redo"):
        store.redo()
    store.undo()
    store.undo()
    store.undo()
    assert store.as_dict() == {}
    with pytest.raises(NothingToUndoError, match="undo"):
        store.undo()


def test_card_count_stays_in_step(lab, model, unique):
    model.set_labels([1, 2, 3], 0)
    model.labels.undo()
    model.set_labels([4, 5], 1)
    card = next(c for c in lab.list_models() if c.name == unique)
    assert card.labeled_count == 2


def test_labels_are_isolated_per_model(lab, unique):
    a = lab.create_model(f"{unique}-a")
    b = lab.create_model(f"{unique}-b")
    a.set_label(1, 1)
    b.set_label(2, 2)
    assert reopen(lab, a).labels.as_dict() == {1: 1}
    assert reopen(lab, b).labels.as_dict() == {2: 2}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.set_label(0, "10"), "not a class of data set 'digits'"),
        (lambda m: m.set_label(0, "cat"), "not a class"),
        (lambda m: m.set_label(1797, 1), "outside the data set 'digits' \\(0 to 1796\\)"),
        (lambda m: m.set_label(-1, 1), "outside"),
        (lambda m: m.set_labels([1, 2, 5000], 1), "5000"),
        (lambda m: m.set_label("x", 1), "not a whole number"),
    ],
)
def test_bad_input_changes_nothing(lab, model, call, message):
    model.set_label(3, 3)
    with pytest.raises(InvalidLabelError, match=message):
        call(model)
    assert reopen(lab, model).labels.as_dict() == {3: 3}


def test_csv_round_trip(lab, model, tmp_path):
    model.set_labels({0: "0", 5: "5", 17: "9"})
    path = model.export_labels(tmp_path / "out" / "labels.csv")
    assert path.read_text().splitlines() == ["sample_index,label", "0,0", "5,5", "17,9"]
    other = lab.create_model(f"{model.name}-copy")
    other.import_labels(path)
    assert other.labels.as_dict() == {0: 0, 5: 5, 17: 9}


def test_csv_import_is_one_undoable_change_and_can_replace(model, tmp_path):
    model.set_label(1000, 1)
    csv = tmp_path / "in.csv"
    csv.write_text("sample_index,label\n1,3\n2,4\n\n# a comment\n3,5\n")
    model.import_labels(csv)
    assert model.labels.as_dict() == {1000: 1, 1: 3, 2: 4, 3: 5}
    model.labels.undo()
    assert model.labels.as_dict() == {1000: 1}
    model.import_labels(csv, replace=True)
    assert model.labels.as_dict() == {1: 3, 2: 4, 3: 5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sample_index,label\n1,3\n2\n", "Line 3: expected 'sample index,label', got 1 fields"),
        ("1,3\nabc,4\n", "Line 2: sample index 'abc' is not a number"),
        ("1,3\n2,3\n9999,1\n", "Line 3: .*outside the data set"),
        ("1,3\n2,eleven\n", "Line 2: Label 'eleven' is not a class"),
        ("1,3,4\n", "Line 1: expected"),
    ],
)
def test_malformed_csv_names_the_line_and_changes_nothing(model, tmp_path, text, message):
    model.set_label(7, 7)
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(LabelFileError, match=message):
        model.import_labels(csv)
    assert model.labels.as_dict() == {7: 7}


def test_stats_and_digest(model):
    model.set_labels({1: 0, 2: 0, 3: 9})
    stats = model.labels.stats()
    assert stats["0"] == 2 and stats["9"] == 1 and stats["5"] == 0
    assert list(stats) == list("0123456789")
    digest = model.labels.digest()
    model.set_label(4, 4)
    assert model.labels.digest() != digest
    model.labels.undo()
    assert model.labels.digest() == digest


def test_as_array_marks_unlabeled(model):
    model.set_labels({0: 5, 1796: 2})
    array = model.labels.as_array()
    assert array.shape == (1797,)
    assert array[0] == 5 and array[1796] == 2
    assert (array[1:1796] == -1).all()


def test_snapshots_let_a_new_reader_skip_the_log(lab, model):
    for i in range(SNAPSHOT_EVERY + 5):
        model.set_label(i, i % 10)
    folder = lab.tracking.folder(model.experiment)
    snapshots = folder.list(SNAPSHOT_DIR)
    assert len(snapshots) == 1
    fresh = reopen(lab, model).labels
    assert fresh.as_dict() == {i: i % 10 for i in range(SNAPSHOT_EVERY + 5)}
    assert fresh.can_undo
    fresh.undo()
    assert SNAPSHOT_EVERY + 4 not in reopen(lab, model).labels.as_dict()


def test_an_event_arriving_late_under_a_snapshot_is_not_lost(lab, model):
    """A writer whose clock lags (or whose upload was slow) still counts."""
    for i in range(SNAPSHOT_EVERY):
        model.set_label(i, 1)
    folder = lab.tracking.folder(model.experiment)
    late = LabelEvent(
        "0000000000000000001-1a7e0000", "set", {500: (None, 8)}, "slow@elsewhere", 0.0
    )
    folder.write(f"{LOG_DIR}/{late.id}.json", late.to_json())
    assert reopen(lab, model).labels.get(500) == 8  # a cold reader replays the log
    model.labels.refresh()  # a warm reader folds it in too
    assert model.labels.get(500) == 8
    assert model.labels.count == SNAPSHOT_EVERY + 1


def test_a_half_written_event_is_skipped_until_it_parses(lab, model):
    model.set_label(1, 1)
    folder = lab.tracking.folder(model.experiment)
    event_id = "9999999999999999999-0a12fa10"
    folder.write(f"{LOG_DIR}/{event_id}.json", b'{"id": "999')
    store = reopen(lab, model).labels
    assert store.as_dict() == {1: 1}
    whole = LabelEvent(event_id, "set", {2: (None, 2)}, "me", 0.0)
    folder.write(f"{LOG_DIR}/{event_id}.json", whole.to_json())
    assert store.refresh() is True
    assert store.as_dict() == {1: 1, 2: 2}


def test_label_change_event_reaches_plugins(lab, model):
    from activelab import hookimpl

    seen: list[tuple[str, dict]] = []

    class Listener:
        @hookimpl
        def on_labels_changed(self, model_id, change):
            seen.append((model_id, change))

    host = lab.plugins
    host.add(Listener(), "test-listener", "test", None, "tests")
    try:
        model.set_labels([3, 4], 2)
    finally:
        host.remove("test-listener")
    assert seen[0][0] == model.id
    assert json.loads(json.dumps(seen[0][1]))["changes"] == {"3": [None, 2], "4": [None, 2]}


def test_hostile_or_damaged_label_files_are_skipped_and_never_followed(local_lab, unique, tmp_path):
    import json
    import time

    from activelab.labels import LOG_DIR

    model = local_lab.create_model(unique)
    model.set_label(0, 1)
    folder = model.labels.folder
    stamp = time.time_ns()

    def plant(name: str, **fields) -> None:
        event = {"id": name, "kind": "set", "changes": {"5": [None, 3]}, "author": "x",
                 "time": 0.0, "target": None, **fields}  # fmt: skip
        folder.write(f"{LOG_DIR}/{name}.json", json.dumps(event).encode())

    plant(f"{stamp + 1:019d}-aaaaaaaa", id="../../../../escape")  # claims a path as its id
    plant(f"{stamp + 2:019d}-bbbbbbbb", id=f"{stamp + 2:019d}-bbbbbbbb", changes={"7": [None, 99]})
    plant(f"{stamp + 3:019d}-cccccccc", changes={"1000000": [None, 2]})  # outside the data
    plant(f"{stamp + 4:019d}-dddddddd", kind="rm -rf")
    plant("not-an-event-id")  # a name no writer makes
    folder.write(f"{LOG_DIR}/{stamp + 5:019d}-eeeeeeee.json", b"\x00\xff not json")

    reopened = reopen(local_lab, model)
    assert reopened.labels.as_dict() == {0: 1}, "only the genuine event counts"
    for i in range(1, 60):  # later writes work, past a snapshot
        reopened.set_label(i, i % 10)
    assert len(reopen(local_lab, model).labels.as_dict()) == 60
    assert reopened.labels.stats() and reopened.labels.to_csv().startswith("sample_index")
    assert not list(tmp_path.rglob("escape*")), "nothing was written outside the store"
