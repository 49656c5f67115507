"""Bad input, the way a careless user or a stray file gives it: each case is refused with an
error that says what to do, and nothing changes (or, for harmless quirks, it just works)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from activelab.cli.main import cli
from activelab.errors import InvalidConfigError, LabelFileError
from activelab.labels import decode_csv


def _store_args(lab) -> list[str]:
    return ["--tracking-uri", lab.settings.tracking_uri, "--home", str(lab.settings.home)]


CSV_CASES = [
    # (what a person gives, the error it gets; None = accepted)
    ("\ufeffsample_index,label\n1,3\n2,4\n", None),  # Excel's byte-order mark
    ("\ufeff1,3\n2,4\n", None),  # a BOM on a file without a header keeps its first row
    ("l32,3\n2,4\n", "Line 1: sample index 'l32' is not a number"),  # a typo, not a header
    ("1,3\n1,3\n", None),  # the same row twice is harmless
    ("1,3\n2,4\n1,5\n", "Line 3: sample 1 is labeled '5' here but '3' on line 1"),
    ("1,3\x00\n", "binary"),
]


@pytest.mark.parametrize(("text", "error"), CSV_CASES)
def test_csv_quirks_are_handled_or_refused_by_line(local_lab, unique, text, error):
    model = local_lab.create_model(unique)
    model.set_label(0, 1)
    if error is None:
        model.labels.import_csv(text)
        assert model.labels.get(1) == 3
        return
    with pytest.raises(LabelFileError, match=error):
        model.labels.import_csv(text)
    assert model.labels.as_dict() == {0: 1}, "nothing changed"


def test_files_that_are_not_utf8_text_are_refused_naming_the_line(local_lab, unique, tmp_path):
    with pytest.raises(LabelFileError, match=r"not UTF-8 text \(line 2 has the byte 0xe9\)"):
        decode_csv("1,3\n2,caf\u00e9\n".encode("latin-1"), "labels.csv")
    model = local_lab.create_model(unique)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("1,3\n2,caf\u00e9\n".encode("latin-1"))
    args = _store_args(local_lab)
    out = CliRunner().invoke(cli, [*args, "labels", "import", model.name, str(latin)])
    assert out.exit_code == 1
    assert "save it as CSV UTF-8" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(
        cli, [*args, "labels", "import", model.name, "-"], input="\ufeff1,3\n2,4\n"
    )
    assert out.exit_code == 0, out.output
    assert model.labels.as_dict() == {1: 3, 2: 4}, "stdin with a BOM keeps its first row"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"trainer.hidden_dims": "[-3]"}, "has a layer narrower than 1"),
        ({"trainer.hidden_dims": "[]"}, "at least one layer"),
        ({"tasks.kl.weight": "inf"}, "not a finite number"),
        ({"trainer.lr": "nan"}, "'lr'"),
    ],
)
def test_config_values_are_checked_when_set_not_at_training(local_lab, unique, overrides, error):
    model = local_lab.create_model(unique)
    before = model.config.to_dict()
    with pytest.raises(InvalidConfigError, match=error):
        model.update_config(overrides)
    assert model.refresh().config.to_dict() == before, "nothing changed"


@pytest.mark.parametrize("name", ["two\nlines", "a\ttab", "nul\x00byte", "bell\x07"])
def test_names_with_control_characters_are_refused(local_lab, unique, name):
    with pytest.raises(InvalidConfigError, match="control character"):
        local_lab.create_model(f"{unique}{name}")
    assert not [m for m in local_lab.list_models() if m.name.startswith(unique)]
    model = local_lab.create_model(unique)
    with pytest.raises(InvalidConfigError, match="control character"):
        model.launch(epochs=1, run_name=f"run{name}")
    assert model.runs() == [], "refused before a run exists"


def test_a_name_with_a_quote_can_be_deleted_and_restored(local_lab, unique):
    model = local_lab.create_model(f"{unique} it's")
    model.delete()
    assert local_lab.restore_model(f"{unique} it's").name == f"{unique} it's"
    args = _store_args(local_lab)
    local_lab.get_model(f"{unique} it's").delete()
    out = CliRunner().invoke(cli, [*args, "models", "restore", f"{unique} it's"])
    assert out.exit_code == 0, out.output


def test_fractional_epochs_are_refused(local_lab, unique):
    model = local_lab.create_model(unique)
    with pytest.raises(InvalidConfigError, match="whole number"):
        model.launch(epochs=1.7)
    assert model.runs() == []


def test_disk_errors_on_files_a_person_names_say_what_to_do(local_lab, unique, tmp_path):
    """A place that cannot hold a file (here /proc, refused even to root), a file that is not
    there, a folder for a file: one line that names the way out, no traceback."""
    model = local_lab.create_model(unique)
    model.set_labels({1: 3})
    args = _store_args(local_lab)
    cases = [
        (["labels", "export", model.name, "/proc/activelab-labels.csv"], "does not exist"),
        (["labels", "import", model.name, str(tmp_path / "nowhere.csv")], "does not exist"),
        (["labels", "export", model.name, str(tmp_path)], "is a directory"),
    ]
    for command, answer in cases:
        out = CliRunner().invoke(cli, [*args, *command])
        assert out.exit_code != 0 and answer in out.output, out.output
        assert "Traceback" not in out.output and "ACTIVELAB_DEBUG" not in out.output
    assert model.labels.as_dict() == {1: 3}
