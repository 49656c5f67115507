"""The plugin system: entry points, built-ins, task folders with hot reload, events."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import HANGING_FILES, drop_hanging_files, drop_task_file, wait_until

from activelab import hookspecs
from activelab.plugins import PluginHost
from activelab.task_watcher import TaskRegistry
from activelab.time_limit import TIME_LIMIT_ENV


@pytest.fixture
def host() -> PluginHost:
    """A fresh plugin host (not the process-wide one)."""
    fresh = PluginHost()
    fresh.load()
    return fresh


def test_built_ins_register_through_the_same_hooks(host):
    assert {"reconstruction", "kl", "classification", "map"} <= set(host.registry("tasks"))
    assert set(host.registry("trainers")) >= {"ssvae"}
    assert {"digits", "mnist", "fashion-mnist", "image-folder"} <= set(host.registry("datasets"))
    assert {"least_confidence", "margin", "entropy", "random", "typiclust", "auto"} <= set(
        host.registry("strategies")
    )
    records = {r.name: r for r in host.describe()}
    assert records["activelab.tasks.losses"].source == "built-in"
    assert records["activelab.tasks.losses"].registered["tasks"] == [
        "reconstruction",
        "kl",
        "classification",
        "map",
    ]


def test_installed_entry_point_is_discovered(host):
    record = next(r for r in host.describe() if r.name == "example")
    assert record.source == "entry point"
    assert record.version == "0.2.0"
    assert record.registered == {"tasks": ["decorrelation"]}
    assert {"on_train_start", "on_epoch_end", "on_train_end"} <= set(record.hooks)


def _fake_distribution(site: Path, name: str, module: str, body: str) -> None:
    """An installed distribution on sys.path with an `activelab` entry point."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[activelab]\n{name} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(body))


def test_a_broken_entry_point_is_reported_and_the_rest_load(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _fake_distribution(
        site,
        "broken",
        "broken_activelab_plugin",
        "raise ImportError('needs a library that is not installed')\n",
    )
    _fake_distribution(
        site,
        "oddhook",
        "oddhook_activelab_plugin",
        """
        from activelab import hookimpl

        @hookimpl
        def register_everything(register):
            pass
    """,
    )
    monkeypatch.syspath_prepend(str(site))
    host = PluginHost()
    host.load()
    assert "needs a library that is not installed" in host.errors["broken"].message
    assert host.errors["broken"].source == "entry point"
    assert "unknown hook" in host.errors["oddhook"].message
    assert "example" in {r.name for r in host.describe()}
    assert "classification" in host.registry("tasks")


def test_plugins_can_be_disabled_by_name(monkeypatch):
    monkeypatch.setenv("ACTIVELAB_DISABLE_PLUGINS", "example, strategies")
    host = PluginHost()
    host.load()
    assert "decorrelation" not in host.registry("tasks")
    assert host.registry("strategies") == {}
    assert "classification" in host.registry("tasks")


def test_hook_calls_can_be_traced(monkeypatch, capfd):
    monkeypatch.setenv("ACTIVELAB_TRACE_HOOKS", "1")
    host = PluginHost()
    host.load()
    host.registry("tasks")  # the product's own paths, not pm.hook by hand
    traced = capfd.readouterr().err
    assert "register_tasks [hook]" in traced


def test_a_registration_that_is_not_a_task_is_reported(host):
    from activelab import hookimpl

    class Bad:
        @hookimpl
        def register_tasks(self, register):
            register(dict)

    host.add(Bad(), "bad", "test", None, "tests")
    tasks = host.registry("tasks")
    assert "classification" in tasks
    assert "not a Task subclass" in host.errors["bad"].message


def test_lifecycle_events_reach_every_subscriber_even_if_one_fails(host):
    from activelab import hookimpl

    seen = []

    class Failing:
        @hookimpl
        def on_train_end(self, run, status, error):
            raise RuntimeError("subscriber bug")

    class Listening:
        @hookimpl
        def on_train_end(self, run, status, error):
            seen.append(status)

    host.add(Failing(), "failing", "test", None, "tests")
    host.add(Listening(), "listening", "test", None, "tests")
    host.emit("on_train_end", run=None, status="FINISHED", error=None)
    assert seen == ["FINISHED"]


@pytest.fixture
def watched(tmp_path, host):
    folder = tmp_path / "watched"
    registry = TaskRegistry(host, [folder]).start()
    yield folder
    registry.stop()


def test_hot_reload_add_edit_break_fix_delete(host, watched):
    path = drop_task_file("latent_norm.py", watched)
    cls = wait_until(lambda: host.registry("tasks").get("latent_norm"), message="new task file")
    assert cls.defaults() == {"power": 2.0}
    record = host.records[host.folder_plugin_name(path)]
    assert record.source == "folder" and record.registered == {"tasks": ["latent_norm"]}

    path.write_text(path.read_text().replace("2.0, bounds", "3.0, bounds"))
    wait_until(
        lambda: host.registry("tasks")["latent_norm"].defaults() == {"power": 3.0},
        message="edited task file",
    )

    path.write_text(path.read_text().replace("def loss(self", "def loss(self,,"))
    error = wait_until(
        lambda: host.errors.get(host.folder_plugin_name(path)), message="syntax error report"
    )
    assert error.file == str(path.resolve())
    assert (
        error.line
        == path.read_text()
        .splitlines()
        .index(next(line for line in path.read_text().splitlines() if ",," in line))
        + 1
    )
    assert error.message.startswith("SyntaxError")
    assert "latent_norm" not in host.registry("tasks")
    assert "classification" in host.registry("tasks")  # everything else keeps working

    path.write_text(path.read_text().replace("def loss(self,,", "def loss(self"))
    wait_until(lambda: "latent_norm" in host.registry("tasks"), message="fixed task file")
    assert host.folder_plugin_name(path) not in host.errors

    path.unlink()
    wait_until(lambda: "latent_norm" not in host.registry("tasks"), message="deleted task file")


def test_import_errors_name_the_line(host, watched):
    path = watched / "needs_lib.py"
    path.write_text("import os\n\nimport not_a_real_module_xyz\n")
    error = wait_until(lambda: host.errors.get(host.folder_plugin_name(path)), message="report")
    assert (error.line, error.file) == (3, str(path.resolve()))
    assert "not_a_real_module_xyz" in error.message


def test_hookimpl_files_and_empty_files(host, watched):
    drop_task_file("hooked.py", watched)
    wait_until(lambda: "hooked" in host.registry("tasks"), message="hookimpl file")
    empty = watched / "nothing.py"
    empty.write_text("X = 1\n")
    error = wait_until(lambda: host.errors.get(host.folder_plugin_name(empty)), message="report")
    assert "defines no subclass with a `kind` of Task, Trainer" in error.message


def test_a_file_of_any_category_registers_with_only_its_own_hook(host, watched):
    drop_task_file("count_only.py", watched)
    wait_until(lambda: "count_only" in host.registry("analyzers"), message="the analyzer")
    record = host.records[host.folder_plugin_name(watched / "count_only.py")]
    assert record.hooks == ["register_analyzers"], "no hook it does not implement"
    drop_task_file("latent_norm.py", watched)
    wait_until(lambda: "latent_norm" in host.registry("tasks"), message="the task")
    record = host.records[host.folder_plugin_name(watched / "latent_norm.py")]
    assert record.hooks == ["register_tasks"]


def test_plugins_command_lists_sources_versions_and_errors(local_uri, tmp_path):
    from activelab.cli.main import cli

    tasks = tmp_path / "tasks"
    drop_task_file("latent_norm.py", tasks)
    (tasks / "broken.py").write_text("def oops(:\n")
    result = CliRunner().invoke(
        cli, ["--tracking-uri", local_uri, "--tasks-dir", str(tasks), "plugins", "--json"]
    )
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    sources = {p["source"] for p in listing["plugins"]}
    assert sources == {"built-in", "entry point", "folder"}
    folder = next(p for p in listing["plugins"] if p["source"] == "folder")
    assert folder["registered"] == {"tasks": ["latent_norm"]}
    broken = next(e for e in listing["errors"] if e["file"] and e["file"].endswith("broken.py"))
    assert broken["line"] == 1 and "SyntaxError" in broken["message"]
    shown = CliRunner().invoke(cli, ["--tracking-uri", local_uri, "plugins", "show", "ssvae"])
    assert "latent_dim" in shown.stdout and "Adam learning rate" in shown.stdout


def test_every_hook_is_documented_and_tested():
    """datasette's meta-test: a hook without a docstring or a test fails the suite."""
    specs = [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "activelab_spec")
    ]
    assert len(specs) >= 9
    tests_text = "\n".join(
        p.read_text() for p in Path(__file__).parent.rglob("*.py") if p.name != Path(__file__).name
    )
    tests_text += "".join(
        p.read_text() for p in (Path(__file__).parents[1] / "examples").rglob("*.py")
    )
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"{name} has no docstring"
        assert name in tests_text, f"no test or example uses the hook {name}"


def test_every_public_name_is_exported_and_visible_to_type_checkers():
    """`import activelab` stays light (names load on first use), yet every name in
    `__all__` resolves, and the lazy ones are imported for type checkers too."""
    import ast

    import activelab

    assert set(activelab._LAZY) <= set(activelab.__all__)
    for name in activelab.__all__:
        assert getattr(activelab, name) is not None
    tree = ast.parse(Path(activelab.__file__).read_text())
    typed = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for statement in node.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }
    assert set(activelab._LAZY) <= typed


def test_mlflow_s_tag_names_are_mlflow_s_own():
    from mlflow.utils import mlflow_tags

    from activelab import keys

    assert keys.NOTE_TAG == mlflow_tags.MLFLOW_RUN_NOTE
    assert keys.MLFLOW_PARENT_RUN_ID == mlflow_tags.MLFLOW_PARENT_RUN_ID
    assert keys.MLFLOW_SOURCE_NAME == mlflow_tags.MLFLOW_SOURCE_NAME
    assert keys.MLFLOW_SOURCE_TYPE == mlflow_tags.MLFLOW_SOURCE_TYPE
    assert keys.MLFLOW_USER == mlflow_tags.MLFLOW_USER


def test_two_files_of_one_kind_are_named_by_their_paths(host, watched):
    first = drop_task_file("latent_norm.py", watched)
    wait_until(lambda: "latent_norm" in host.registry("tasks"), message="the first file's task")
    second = watched / "latent_norm_again.py"
    second.write_text(first.read_text())

    def conflict() -> str | None:
        host.registry("tasks")
        return next((c for c in host.conflicts if "latent_norm" in c), None)

    message = wait_until(conflict, message="the conflict reported")
    assert first.name in message and second.name in message, message
    assert "another `kind`" in message


def test_a_task_file_whose_import_hangs_is_reported_and_skipped(host, tmp_path, monkeypatch):
    monkeypatch.setenv(TIME_LIMIT_ENV, "1")
    folder = tmp_path / "tasks"
    drop_hanging_files(folder)
    drop_task_file("latent_norm.py", folder)
    loading = threading.Thread(target=host.load, args=([folder],), daemon=True)
    loading.start()
    loading.join(120)  # a bound for the test itself: without the time limit it never returns
    assert not loading.is_alive(), "loading the task folder hung"

    spin = host.errors[host.folder_plugin_name(folder / "spin.py")]
    assert (spin.file, spin.line) == (str((folder / "spin.py").resolve()), 2)
    assert "did not finish within 1 s" in spin.message and "it was stopped" in spin.message
    assert TIME_LIMIT_ENV in spin.message  # what to do if the file is just slow
    sleeper = host.errors[host.folder_plugin_name(folder / "sleeper.py")]
    assert sleeper.line == 2 and "time.sleep(3600)" in sleeper.message
    assert "cannot be interrupted" in sleeper.message
    assert "latent_norm" in host.registry("tasks")  # the rest of the folder loads
    spinning = [t for t in threading.enumerate() if "spin.py" in t.name]
    assert not spinning, "the stopped import's thread still runs"


def test_the_cli_answers_and_names_a_hanging_task_file(tmp_path):
    folder = tmp_path / "tasks"
    drop_hanging_files(folder)
    env = {**os.environ, TIME_LIMIT_ENV: "2", "ACTIVELAB_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("activelab")), "--tasks-dir", str(folder),
         "plugins", "--json"],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    errors = {Path(e["file"]).name: e for e in json.loads(result.stdout)["errors"] if e["file"]}
    assert set(HANGING_FILES) <= set(errors)
    assert errors["spin.py"]["line"] == 2
    assert "did not finish within 2 s" in errors["sleeper.py"]["message"]
    assert "spin.py" in result.stderr  # said as it happened, too
