"""Fixtures: a real sqlite store per test, and one real `mlflow server` per session."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activelab.launcher import IN_PROCESS_RUN_THREAD
from activelab.mlflow_server import start_mlflow_server

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches ~/.activelab or a tracking server from the environment."""
    monkeypatch.setenv("ACTIVELAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ACTIVELAB_TASKS_DIRS", raising=False)
    monkeypatch.delenv("ACTIVELAB_ARTIFACT_ROOT", raising=False)
    # The session's warm worker (below) serves this process's launches; the apps and CLIs
    # that tests start as processes of their own start none (its imports would compete).
    monkeypatch.setenv("ACTIVELAB_WARM_WORKER", "0")
    # Workers yield to the person beside them (nice 10); here the "person" is the other
    # tests, which mostly wait on workers: the same priority keeps the suite fast.
    # test_the_worker_yields_to_the_app_at_a_lower_priority checks the default.
    monkeypatch.setenv("ACTIVELAB_WORKER_NICE", "0")
    # MLflow samples CPU/memory every 10 s; tests' runs are shorter than that.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    yield
    # An in-process run's follow-ups (logged model, evaluation) go on after its end, as a
    # script's do: they finish in the test that started them, not in the next one.
    for thread in threading.enumerate():
        if thread.name.startswith(IN_PROCESS_RUN_THREAD):
            thread.join(timeout=120)


@pytest.fixture(scope="session", autouse=True)
def warm_worker(tmp_path_factory: pytest.TempPathFactory):
    """One warm worker per test process forks the workers of its tests' launches, each under
    its test's environment (as the app's does for its users): ~9 CPU-s of imports saved per
    launch, the suite's largest cost."""
    from activelab import standby

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTIVELAB_WORKER_NICE", "0")  # as the tests' workers run (isolated_env)
        standby.start(tmp_path_factory.mktemp("warm-worker"))
    yield
    standby.shutdown()


@pytest.fixture(autouse=True)
def no_stray_workers(tmp_path: Path):
    """A test's training workers end with it. Tests launch long runs and stop them; one that
    fails before its stop would leave a trainer on the cores for the rest of the suite (seen:
    two 10,000-epoch runs training on for 13 minutes), and later tests would time out too."""
    yield
    import psutil

    for worker in _workers_writing_under(tmp_path):
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()
    psutil.wait_procs(_workers_writing_under(tmp_path), timeout=30)


def _workers_writing_under(folder: Path) -> list:
    """The worker processes whose output (their run's worker.log) is under `folder`."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "activelab.worker" not in (process.info["cmdline"] or []):
            continue
        try:
            output = os.readlink(f"/proc/{process.pid}/fd/1")
        except OSError:
            continue
        if output.startswith(str(folder)):
            found.append(process)
    return found


@pytest.fixture(autouse=True)
def forget_test_task_folders(tmp_path: Path):
    """Task files a test loaded from its tmp folders do not leak into later tests."""
    yield
    from activelab import plugins

    host = plugins._host
    if host is not None:
        for folder in {tmp_path / "tasks", tmp_path / "home" / "tasks"}:
            host.unload_folder(folder)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 as MLflow advises teams to run one: its backend
    store on PostgreSQL, artifacts proxied by the server (one per test run, shared by the
    xdist workers). Servers on sqlite are started by the tests of outages and of `serve`."""
    from postgres import postgres_missing, start_postgres

    problem = postgres_missing()
    if problem:
        pytest.fail(problem)

    def start(root: Path, shared: bool) -> tuple[Any, Any]:
        database = start_postgres(root / "postgres")
        try:
            server = start_mlflow_server(
                database.uri,
                artifacts_destination=str(root / "artifacts"),
                log_path=root / "server.log",
                die_with_parent=not shared,
            ).wait_ready(timeout=180)
        except BaseException:
            database.stop()
            raise
        return database, server

    yield from _session_service(tmp_path_factory, "mlflow-server", start)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server --app-name basic-auth` with users alice and bob (one per xdist
    worker: its tests grant and test permissions, so one worker's grants stay its own)."""
    from team_auth import start_auth_server

    server = start_auth_server(tmp_path_factory.mktemp("auth-server"))
    yield server
    server.server.stop()


class _Served:
    def __init__(self, url: str) -> None:
        self.url = url


def _session_service(tmp_path_factory: pytest.TempPathFactory, name: str, start):
    """Start a session's server once per test run: shared by the xdist workers (the
    controller stops it, `pytest_sessionfinish` below), or this session's own without xdist."""
    from shared_services import distributed, shared_service

    if not distributed():
        database, server = start(tmp_path_factory.mktemp(name), False)
        try:
            yield _Served(server.url)
        finally:
            server.stop()
            if database is not None:
                database.stop()
        return

    def start_shared(root: Path) -> dict[str, Any]:
        root.mkdir(parents=True, exist_ok=True)
        database, server = start(root, True)
        record: dict[str, Any] = {"url": server.url, "process_groups": [server.process.pid]}
        if database is not None:
            record["postgres"] = {
                "folder": str(database.folder), "port": database.port, "run_as": database.run_as
            }  # fmt: skip
        return record

    yield _Served(shared_service(tmp_path_factory.getbasetemp().parent, name, start_shared)["url"])


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The xdist controller stops the servers its workers shared, once they have all ended."""
    from shared_services import distributed, stop_shared_services

    if not distributed() and session.config.pluginmanager.hasplugin("dsession"):
        stop_shared_services(session.config._tmp_path_factory.getbasetemp())


@pytest.fixture
def killable_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private `mlflow server` a test may kill and restart; HTTP fails fast here as it does
    in activelab's worker, CLI and app."""
    from helpers import KillableServer

    from activelab.connectivity import FAST_FAILURE_ENV

    for name, value in FAST_FAILURE_ENV.items():
        monkeypatch.setenv(name, value)
    server = KillableServer(tmp_path / "server").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow sqlite database; copying it saves each test ~2 s of schema setup."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def local_uri(tmp_path: Path, empty_store: Path) -> str:
    """A fresh sqlite store under tmp_path."""
    target = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["local", "server"])
def tracking_uri(request: pytest.FixtureRequest) -> str:
    """The same test against a sqlite store under tmp_path and through the real server."""
    if request.param == "server":
        return request.getfixturevalue("mlflow_server").url
    return request.getfixturevalue("local_uri")


@pytest.fixture
def lab(tracking_uri: str, tmp_path: Path):
    from activelab import Lab

    return Lab(tracking_uri=tracking_uri, home=tmp_path / "home")


@pytest.fixture
def local_lab(local_uri: str, tmp_path: Path):
    from activelab import Lab

    return Lab(tracking_uri=local_uri, home=tmp_path / "home")


@pytest.fixture
def unique() -> str:
    """A name prefix no other test uses (the server is shared by the session)."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
