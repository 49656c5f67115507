"""Fault injection: processes killed, the tracking server gone for a minute, two people at
once, a read-only disk. Each fault is injected for real; each test checks that nothing is lost
and that whoever looks is told, within a bound, what happened and where to continue from."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from helpers import FAST, mlflow_client, run_cli, wait_until

from activelab import Lab, keys
from activelab.errors import StorageError
from activelab.outbox import Spool, outbox_root

LONG = 10_000  # epochs: the test ends the run
OUTAGE_S = 20


def _training(handle) -> int:
    return (handle.progress or {}).get("run_steps", 0)


def _step_history(client, run_id: str, key: str = "loss/total") -> list[int]:
    return sorted({m.step for m in client.get_metric_history(run_id, key)})


# --- dead trainers ----------------------------------------------------------------------------


def test_kill_9_of_the_trainer_is_found_by_whoever_looks(lab, unique):
    model = lab.create_model(unique, config=FAST)
    handle = model.launch(epochs=LONG)
    wait_until(lambda: _training(handle) > 0, message="training")
    os.kill(handle.process.pid, signal.SIGKILL)
    handle.process.wait(30)
    # another process, with no handle, finds the run dead the first time it lists the runs
    other = Lab(tracking_uri=lab.settings.tracking_uri, home=lab.settings.home)
    runs = other.get_model(model.id).runs()
    assert runs[0].status == "FAILED"
    assert "ended without finishing its run" in runs[0].error
    assert handle.status == "FAILED"


def test_a_stop_seen_through_mlflow_and_then_signalled_stays_graceful():
    """`runs stop` sets the stop tag, then signals a trainer on its machine. A trainer whose
    poll saw the tag first took that SIGTERM for a second one and died at once (FAILED, no
    checkpoint: caught beside a CPU hog). The signal is the first one: only a second ends
    the process at once. A real process with the worker's handlers."""
    script = textwrap.dedent(
        """
        import os, signal, threading
        from activelab.worker import _install_stop_signals
        stop = threading.Event()
        _install_stop_signals(stop)
        stop.set()  # the stop tag, seen by the worker's poll
        os.kill(os.getpid(), signal.SIGTERM)  # then the signal of `runs stop`
        print("stopping gracefully", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal
        print("not reached", flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "stopping gracefully" in out.stdout, out.stderr
    assert "not reached" not in out.stdout
    assert out.returncode == -signal.SIGTERM


def test_runs_stop_on_a_dead_run_returns_at_once_naming_its_checkpoint(local_lab, unique):
    lab = local_lab
    model = lab.create_model(unique, config={**FAST, "trainer.checkpoint_every": "1"})
    handle = model.launch(epochs=LONG)
    wait_until(lambda: handle.run.data.tags.get(keys.LAST_CHECKPOINT), message="a checkpoint")
    os.kill(handle.process.pid, signal.SIGKILL)
    handle.process.wait(30)
    started = time.monotonic()
    out = run_cli(lab, "runs", "stop", handle.run_id, "--timeout", "60")
    assert out.returncode == 0, out.stderr
    assert "Run ended: FAILED" in out.stdout
    assert f"Its last checkpoint: {handle.run_id}:epoch-" in out.stdout
    assert time.monotonic() - started < 60, "found dead, not waited out"


def test_stop_from_a_second_process_ends_the_run_killed_with_a_checkpoint(local_lab, unique):
    lab = local_lab
    model = lab.create_model(unique, config=FAST)
    handle = model.launch(epochs=LONG)
    wait_until(lambda: _training(handle) > 0, message="training")
    out = run_cli(lab, "runs", "stop", handle.run_id, "--timeout", "120")
    assert out.returncode == 0, out.stderr
    assert "Run ended: KILLED" in out.stdout
    assert handle.wait(timeout=60) == "KILLED"
    last = handle.run.data.tags[keys.LAST_CHECKPOINT]
    assert last in model.checkpoints(handle.run_id), "the stop saved where it stopped"


# --- the tracking server goes away ------------------------------------------------------------


def test_a_server_outage_mid_run_loses_nothing(killable_server, tmp_path, unique):
    lab = Lab(tracking_uri=killable_server.url, home=tmp_path / "home")
    model = lab.create_model(unique, config={**FAST, "trainer.checkpoint_every": "5"})
    handle = model.launch(epochs=LONG)
    wait_until(lambda: handle.run.data.tags.get(keys.LAST_CHECKPOINT), 120, message="a checkpoint")
    killable_server.kill()
    down_at = time.monotonic()
    spool = Spool(outbox_root(lab.settings.home) / handle.run_id)

    def spooled_checkpoints() -> int:
        return sum(e["kind"] == "artifact" for e in spool.pending())

    # the fault outlasts every HTTP retry (they give up after ~3 s here, as in the worker) many
    # times over; meanwhile training goes on and what it logs lands on local disk.
    # tests/bench/bench_outage.py holds a 10-minute outage.
    wait_until(
        lambda: time.monotonic() - down_at >= OUTAGE_S and spooled_checkpoints() >= 3,
        timeout=180,
        message="a minute of outage with training going on",
    )
    backlog = spool.pending()[-1]["seq"]
    killable_server.start()
    wait_until(lambda: spool.delivered() >= backlog, 120, message="the backlog delivered")
    assert handle.stop(wait=True, timeout=120) == "KILLED"

    client = mlflow_client(lab)
    steps = _step_history(client, handle.run_id)
    assert steps == list(range(steps[0], steps[-1] + 1)), "no step's losses are missing"
    epochs = sorted(
        int(Path(p).stem.split("-")[1]) for p in model.checkpoints(handle.run_id)
        if Path(p).name.startswith("epoch-")
    )  # fmt: skip
    assert epochs == list(range(5, epochs[-1] + 1, 5)), "no checkpoint is missing"
    assert epochs[-1] >= 20, "checkpoints written during the outage were delivered"
    assert not spool.folder.exists()


def test_a_run_ended_during_an_outage_is_not_called_dead_once_the_server_is_back(
    killable_server, tmp_path, unique, monkeypatch
):
    """Its trainer was stopped while the server was down: it ended the run KILLED into its
    spool and exited after its outage wait. Whoever looks once the server is back sends that
    spool and sees KILLED with every step, not a dead trainer's FAILED."""
    monkeypatch.setenv("ACTIVELAB_OUTAGE_WAIT_S", "1")  # the trainer leaves at once
    lab = Lab(tracking_uri=killable_server.url, home=tmp_path / "home")
    model = lab.create_model(unique, config={**FAST, "trainer.checkpoint_every": "1"})
    handle = model.launch(epochs=LONG)
    wait_until(lambda: handle.run.data.tags.get(keys.LAST_CHECKPOINT), 120, message="a checkpoint")
    killable_server.kill()
    os.kill(handle.process.pid, signal.SIGTERM)  # a stop that MLflow cannot carry now
    handle.process.wait(120)
    spool = Spool(outbox_root(lab.settings.home) / handle.run_id)
    assert any(e["kind"] == "end" for e in spool.pending()), "its end waits in the spool"
    killable_server.start()

    other = Lab(tracking_uri=killable_server.url, home=lab.settings.home)  # no handle
    run = other.get_model(model.id).runs()[0]
    assert run.status == "KILLED", run.error
    assert not spool.folder.exists(), "the spool was sent"
    steps = _step_history(mlflow_client(lab), handle.run_id)
    assert steps == list(range(1, steps[-1] + 1)), "no step's losses are missing"


def test_the_cli_says_the_server_is_unreachable_and_gives_up_within_its_bound(
    killable_server, tmp_path
):
    lab = Lab(tracking_uri=killable_server.url, home=tmp_path / "home")
    killable_server.kill()
    out = run_cli(lab, "models", "list", env={"ACTIVELAB_SERVER_WAIT_S": "3"}, timeout=60)
    assert out.returncode == 1
    assert "tracking server unreachable, retrying" in out.stderr
    assert "did not answer for 3 s" in out.stderr


# --- two people, killed writers ---------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from activelab import Lab
    uri, home, model_id = sys.argv[1:4]
    start, count = int(sys.argv[4]), int(sys.argv[5])
    model = Lab(tracking_uri=uri, home=home).get_model(model_id)
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(start, start + count):
        model.set_label(i, i % 10)
        print(f"done {i}", flush=True)
    """
)


def _writer(lab: Lab, model, start: int, count: int, ready: bool = True) -> subprocess.Popen:
    """A labeling process; `ready=False` returns before it has imported everything."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, lab.settings.tracking_uri, str(lab.settings.home),
         model.id, str(start), str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    if ready:
        assert process.stdout.readline().strip() == "ready"
    return process


def _reopen(lab: Lab, model):
    """The model as a fresh process sees it (no cached label state)."""
    return Lab(tracking_uri=lab.settings.tracking_uri, home=lab.settings.home).get_model(model.id)


def test_processes_labeling_one_model_at_once_lose_nothing(lab, unique):
    """Two processes on the local store; eight at once through the team's tracking server
    (PostgreSQL behind it)."""
    from activelab.settings import is_remote

    processes, each = (8, 15) if is_remote(lab.settings.tracking_uri) else (2, 40)
    model = lab.create_model(unique)
    starts = [100 * p for p in range(processes)]
    writers = [_writer(lab, model, start, each, ready=False) for start in starts]
    for writer in writers:  # all ready (imports done) before any starts: truly at once
        assert writer.stdout.readline().strip() == "ready"
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        assert writer.wait(timeout=300) == 0
    expected = {i: i % 10 for start in starts for i in range(start, start + each)}
    assert _reopen(lab, model).labels.as_dict() == expected
    model.labels.refresh()  # a reader that sees a stale card count repairs it
    assert int(model.refresh().experiment.tags[keys.LABELED_COUNT]) == processes * each


def test_a_killed_label_writer_loses_no_acknowledged_label_and_blocks_no_one(local_lab, unique):
    lab = local_lab
    model = lab.create_model(unique)
    writer = _writer(lab, model, 0, 1000)
    writer.stdin.write("go\n")
    writer.stdin.flush()
    acknowledged = [int(writer.stdout.readline().split()[1]) for _ in range(15)]
    writer.kill()
    writer.wait(30)
    labels = _reopen(lab, model).labels.as_dict()
    assert all(labels.get(i) == i % 10 for i in acknowledged), "an acknowledged label was lost"
    survivor = _reopen(lab, model)
    survivor.set_label(1500, 3)
    assert _reopen(lab, model).labels.get(1500) == 3


def test_temp_files_of_killed_writers_are_swept(local_lab, unique):
    model = local_lab.create_model(unique)
    folder = model.labels.folder.local / "activelab" / "labels" / "log"
    model.set_label(0, 1)
    stale = folder / ".tmp-killed-writer"
    stale.write_bytes(b"half an event")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = folder / ".tmp-writing-now"
    fresh.write_bytes(b"a write in progress")
    for i in range(1, 60):  # past the next snapshot
        model.set_label(i, i % 10)
    assert not stale.exists(), "an hour-old temp file is swept"
    assert fresh.exists(), "a write in progress is left alone"
    assert len(_reopen(local_lab, model).labels.as_dict()) == 60


# --- a read-only disk -------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path):
    """Make `folder` read-only for this process, root included (a read-only bind mount)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a folder read-only as root here: {mounted.stderr.strip()}")
    try:
        # "mount point is busy" while the trainer has a file there open for writing (a
        # checkpoint being stored): try again until it is closed, bounded
        def remounted() -> bool:
            done = subprocess.run(
                ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True
            )
            if done.returncode != 0 and "busy" not in done.stderr:
                raise RuntimeError(f"cannot make {folder} read-only: {done.stderr.strip()}")
            return done.returncode == 0

        wait_until(remounted, timeout=60, message=f"{folder} remounted read-only")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_artifact_folder_is_a_clear_error_that_changes_nothing(local_lab, unique):
    model = local_lab.create_model(unique)
    model.set_label(0, 1)
    with read_only(model.labels.folder.local), pytest.raises(StorageError) as refused:
        model.set_label(1, 2)
    assert "Read-only file system" in str(refused.value)
    assert "nothing was changed" in str(refused.value)
    assert _reopen(local_lab, model).labels.as_dict() == {0: 1}


def test_a_run_whose_artifact_folder_turns_read_only_fails_keeping_its_checkpoints(
    local_lab, unique
):
    model = local_lab.create_model(unique, config={**FAST, "trainer.checkpoint_every": "1"})
    handle = model.launch(epochs=LONG)
    wait_until(lambda: handle.run.data.tags.get(keys.LAST_CHECKPOINT), message="a checkpoint")
    before = model.checkpoints(handle.run_id)
    artifacts = Path(urlparse(handle.run.info.artifact_uri).path)
    with read_only(artifacts):
        status = handle.wait(timeout=120)
    assert status == "FAILED"
    error = handle.summary.error
    assert "Could not store checkpoints/" in error and "Read-only file system" in error
    kept = Path(error.split("is kept at ")[1].split(". ")[0])
    assert kept.exists(), "the checkpoint that could not be stored is kept on local disk"
    assert set(before) <= set(model.checkpoints(handle.run_id)), "earlier checkpoints survive"


def test_a_trainer_that_ends_its_run_and_exits_between_two_looks_is_not_called_dead(
    local_lab, unique
):
    """Whoever looks reads the run, then sees its trainer gone. A trainer that ended its run
    (stopped, KILLED) and exited between those two looks is not dead: the run stays KILLED.
    (Under a CPU hog a stop from the Train page was once turned into FAILED this way.)"""
    import socket

    from activelab.runs import reap_dead_runs

    model = local_lab.create_model(unique)
    tracking = local_lab.tracking
    trainer = subprocess.Popen([sys.executable, "-c", "pass"])
    run = tracking.create_run(
        model.id, "stopped-between-looks",
        {keys.PID: str(trainer.pid), keys.HOST: socket.gethostname()},
    )  # fmt: skip
    looked = tracking.get_run(run.info.run_id)  # the first look: RUNNING
    assert looked.info.status == "RUNNING"
    tracking.end_run(run.info.run_id, "KILLED")  # the trainer ends its run...
    trainer.wait(timeout=30)  # ...and exits
    assert reap_dead_runs(tracking, [looked]) == [run.info.run_id], "changed: read it again"
    assert tracking.get_run(run.info.run_id).info.status == "KILLED"
    # a trainer that exits with its run still RUNNING is dead, and said so
    gone = tracking.create_run(
        model.id, "killed-trainer", {keys.PID: str(trainer.pid), keys.HOST: socket.gethostname()}
    )
    assert reap_dead_runs(tracking, [gone]) == [gone.info.run_id]
    assert tracking.get_run(gone.info.run_id).info.status == "FAILED"
