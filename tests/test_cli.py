"""The `activelab` CLI: tables for people, --json for scripts, errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import mlflow_client

from activelab.cli.main import cli


@pytest.fixture
def run(tracking_uri: str, tmp_path: Path):
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(
            cli,
            ["--tracking-uri", tracking_uri, "--home", str(tmp_path / "home"), *args],
            catch_exceptions=False,
        )
        if ok:
            assert result.exit_code == 0, result.output + result.stderr
        return result

    invoke.tracking_uri, invoke.home = tracking_uri, tmp_path / "home"  # type: ignore[attr-defined]
    return invoke


def test_models_create_list_show_json(run, unique):
    out = run(
        "models",
        "create",
        unique,
        "--preset",
        "classification",
        "-d",
        "note",
        "--tag",
        "team=vision",
        "--set",
        "lr=0.005",
        "--json",
    )
    card = json.loads(out.stdout)
    assert card["name"] == unique and card["tags"] == {"team": "vision"}
    listed = json.loads(run("models", "list", "--name", unique, "--json").stdout)
    assert [c["name"] for c in listed] == [unique]
    assert listed[0]["description"] == "note"
    shown = json.loads(run("models", "show", unique, "--json").stdout)
    assert shown["config"]["trainer_params"]["lr"] == 0.005
    assert {t["name"]: t["weight"] for t in shown["config"]["tasks"]}["classification"] == 3
    table = run("models", "list", "--name", unique).stdout
    assert unique in table and "labeled" in table and "digits" in table


def test_labels_commands(run, unique, tmp_path):
    run("models", "create", unique)
    assert "Saved: 12 sample(s)" in run("labels", "set", unique, "3", "1", "2", "10-19").stdout
    run("labels", "clear", unique, "2")
    stats = json.loads(run("labels", "stats", unique, "--json").stdout)
    assert stats["per_class"]["3"] == 11 and stats["labeled"] == 11
    run("labels", "undo", unique)
    assert json.loads(run("labels", "stats", unique, "--json").stdout)["labeled"] == 12
    exported = tmp_path / "labels.csv"
    run("labels", "export", unique, str(exported))
    assert exported.read_text().splitlines()[:3] == ["sample_index,label", "1,3", "2,3"]
    run("labels", "clear", unique, "--all")
    run("labels", "import", unique, str(exported))
    assert json.loads(run("labels", "stats", unique, "--json").stdout)["labeled"] == 12
    assert run("labels", "export", unique).stdout == exported.read_text()
    shown = json.loads(run("labels", "show", unique, "1", "4", "--json").stdout)
    assert shown == [{"sample": 1, "label": "3"}, {"sample": 4, "label": None}]
    # what did not change says why, in words that fit the command
    again = run("labels", "set", unique, "3", "1").stdout
    assert again.strip() == "Nothing changed: the samples were already labeled '3'."
    assert "the samples had no label" in run("labels", "clear", unique, "4").stdout
    same = run("labels", "import", unique, str(exported)).stdout
    assert "every sample in the file already had that label" in same
    empty = tmp_path / "empty.csv"
    empty.write_text("sample_index,label\n")
    assert "the file holds no labels" in run("labels", "import", unique, str(empty)).stdout


def test_list_and_stop_say_what_is_there(run, unique):
    """A filter that matches nothing is not an empty store; a stop of an ended run is no
    stop."""
    run("models", "create", unique)
    listed = run("models", "list", "--tag", f"{unique}=none").stdout
    assert "No models match these filters." in listed and "No models yet" not in listed
    from activelab import Lab

    lab = Lab(tracking_uri=run.tracking_uri, home=run.home)
    model = lab.get_model(unique)
    model.set_labels({i: i % 10 for i in range(20)})
    handle = model.launch(epochs=1, in_process=True, system_metrics=False,
                          config={"trainer.log_model": "false"})  # fmt: skip
    assert handle.wait(timeout=300) == "FINISHED"
    stopped = run("runs", "stop", handle.run_id).stdout
    assert stopped.strip() == f"Run {handle.run_id} already ended (FINISHED); nothing to stop."


def test_errors_go_to_stderr_with_a_nonzero_exit(run, unique, tmp_path):
    run("models", "create", unique)
    bad = run("labels", "set", unique, "42", "1", ok=False)
    assert bad.exit_code == 1
    assert "Label '42' is not a class" in bad.stderr and bad.stdout == ""
    missing = run("models", "show", f"{unique}-nope", ok=False)
    assert missing.exit_code == 1 and "No model named" in missing.stderr
    csv = tmp_path / "bad.csv"
    csv.write_text("1,2\n2,x\n")
    broken = run("labels", "import", unique, str(csv), ok=False)
    assert "Line 2:" in broken.stderr
    assert json.loads(run("labels", "stats", unique, "--json").stdout)["labeled"] == 0


def test_delete_and_restore(run, unique):
    run("models", "create", unique)
    out = run("models", "delete", unique).stdout
    assert "activelab models restore" in out
    assert unique not in run("models", "list", "--name", unique).stdout
    assert unique in run("models", "list", "--deleted").stdout
    run("models", "restore", unique)
    assert unique in run("models", "list", "--name", unique).stdout


def test_console_script_on_the_embedded_store(tmp_path):
    """The installed `activelab` command, with no tracking URI: the embedded default store."""
    env = {**os.environ, "ACTIVELAB_HOME": str(tmp_path / "data")}
    env.pop("MLFLOW_TRACKING_URI", None)
    script = Path(sys.executable).with_name("activelab")

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(script), *args], env=env, capture_output=True, text=True, timeout=120
        )

    created = call("models", "create", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "model-001"
    assert "INFO" not in created.stderr  # MLflow's migration chatter stays quiet
    failed = call("labels", "set", "model-001", "3", "99999")
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: Sample index 99999 is outside")
    assert (tmp_path / "data" / "mlflow.db").exists()
    assert (tmp_path / "data" / "tasks").is_dir(), "the drop-in folder exists from the start"


def test_evaluate_and_analyze_a_checkpoint(run, lab, unique, tmp_path):
    from helpers import FAST

    model = lab.create_model(unique, config={**FAST, "trainer.checkpoint_every": "1"})
    model.set_labels({i: i % 10 for i in range(30)})
    handle = model.launch(epochs=2, wait=True, system_metrics=False, in_process=True)
    assert handle.status == "FINISHED", handle.summary.error

    evaluated = json.loads(
        run("runs", "evaluate", unique, "--run", f"{handle.run_id}:epoch-0001.pt", "--json").stdout
    )
    assert evaluated["run_id"] == handle.run_id
    assert evaluated["checkpoint"] == "checkpoints/epoch-0001.pt"
    figures = {(f["task"], f["metric"]): f for f in evaluated["figures"]}
    assert 0 <= figures["classification", "unlabeled_accuracy"]["value"] <= 1
    eval_run = mlflow_client(lab).get_run(evaluated["eval_run_id"])
    assert eval_run.data.tags["mlflow.parentRunId"] == handle.run_id

    out = tmp_path / "analysis"
    shown = run("runs", "analyze", unique, "latent_over_checkpoints", "--out", str(out))
    assert "epoch-0001.pt" in shown.stdout and "epoch-0002.pt" in shown.stdout
    assert (out / "latent_over_checkpoints.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "nearest_centroid_accuracy" in (out / "latent_over_checkpoints.csv").read_text()
    matrix = json.loads(run("runs", "analyze", unique, "confusion_matrix", "--json").stdout)
    assert sum(sum(v for k, v in row.items() if k != "true \\ predicted")
               for row in matrix["table"]) == 1797  # fmt: skip

    unknown = run("runs", "analyze", unique, "no_such_analyzer", ok=False)
    assert unknown.exit_code == 1 and "installed: confusion_matrix" in unknown.stderr
    untrained = run("runs", "evaluate", f"{unique}-x", ok=False)
    assert untrained.exit_code == 1 and "No model named" in untrained.stderr


def test_activelab_train_traces_its_hook_calls(local_lab, unique):
    """`ACTIVELAB_TRACE_HOOKS=1 activelab train ...`: the command's own hook calls on its
    stderr, and the trainer's (epoch ends, the run's end) in the run's worker log."""
    from helpers import FAST, run_cli

    model = local_lab.create_model(unique, config=FAST)
    trained = run_cli(
        local_lab, "train", model.name, "--epochs", "1", "--no-system-metrics", "--json",
        env={"ACTIVELAB_TRACE_HOOKS": "1"}, timeout=300,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "register_trainers [hook]" in trained.stderr
    run_id = json.loads(trained.stdout)["run_id"]
    worker_log = (local_lab.settings.home / "runs" / run_id / "worker.log").read_text()
    assert "on_epoch_end [hook]" in worker_log
    assert "on_train_end [hook]" in worker_log
