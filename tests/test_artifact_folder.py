"""Experiment-level artifacts: the same behaviour on disk and through the server."""

from __future__ import annotations


def test_write_read_list_and_missing(lab, unique):
    model = lab.create_model(unique)
    folder = lab.tracking.folder(model.experiment)
    assert folder.list("activelab/nothing-here") == []
    assert folder.read("activelab/nothing-here/x.json") is None
    folder.write("activelab/test/a.json", b'{"a": 1}')
    folder.write("activelab/test/b.json", b"second")
    folder.write("activelab/test/a.json", b'{"a": 2}')  # replace
    assert sorted(folder.list("activelab/test")) == ["a.json", "b.json"]
    assert folder.read_many(["activelab/test/a.json", "activelab/test/b.json"]) == {
        "activelab/test/a.json": b'{"a": 2}',
        "activelab/test/b.json": b"second",
    }


def test_local_writes_leave_no_temporary_files(local_lab):
    model = local_lab.create_model("atomic")
    folder = local_lab.tracking.folder(model.experiment)
    for i in range(20):
        folder.write("activelab/x/f.json", str(i).encode())
    assert folder.local is not None
    assert sorted(p.name for p in (folder.local / "activelab/x").iterdir()) == ["f.json"]
    assert folder.read("activelab/x/f.json") == b"19"
