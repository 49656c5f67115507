"""Training on a Ray cluster: a real local Ray head (2 CPUs) runs the worker as a Ray job,
against the session's tracking server on PostgreSQL. Everything after the launch (progress,
stop, dead-worker detection, continuing) goes through MLflow alone, as for local runs.

One test holds every step on the head, so one pytest worker starts one head."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import FAST, drop_task_file, run_cli, wait_until
from ray_cluster import start_ray_head

from activelab import Lab, keys
from activelab.errors import InvalidConfigError, PluginError
from activelab.mlflow_server import free_port

LONG = 10_000  # epochs: the test ends the run


def test_training_runs_stops_continues_and_dies_on_a_ray_cluster(mlflow_server, tmp_path, unique):
    head = start_ray_head(tmp_path / "cluster-home")
    try:
        lab = Lab(tracking_uri=mlflow_server.url, home=tmp_path / "home")
        model = lab.create_model(unique, config=FAST)
        model.set_labels({i: str(i % 10) for i in range(20)})

        # run: a Ray job with the resources it asked for, found by its tags in MLflow
        handle = model.launch(epochs=LONG, backend="ray", address=head.url, cpus=1)
        assert handle.process is None, "nothing runs on the launching side"
        run = wait_until(
            lambda: (r := handle.run) and r.data.tags.get(keys.LAST_CHECKPOINT) and r,
            120, message="the Ray job's first checkpoint",
        )  # fmt: skip
        tags = run.data.tags
        assert tags[keys.BACKEND] == "ray"
        assert tags[keys.BACKEND_ADDRESS] == head.url
        assert tags[keys.BACKEND_JOB] == f"activelab-{handle.run_id}"
        worker_pid = int(tags[keys.PID])
        assert worker_pid != os.getpid()
        from ray.job_submission import JobSubmissionClient

        jobs = JobSubmissionClient(head.url)
        job = jobs.get_job_info(tags[keys.BACKEND_JOB])
        assert job.entrypoint == "python -m activelab.worker -"
        assert job.metadata["activelab_run"] == handle.run_id

        # stop from another process that knows nothing of Ray: KILLED with a checkpoint
        out = run_cli(lab, "runs", "stop", handle.run_id, "--timeout", "120", timeout=180)
        assert out.returncode == 0, out.stderr
        assert "Run ended: KILLED" in out.stdout
        assert handle.wait(timeout=60) == "KILLED"
        stopped = handle.run
        assert stopped.data.tags[keys.LAST_CHECKPOINT] in model.checkpoints(handle.run_id)
        wait_until(
            lambda: jobs.get_job_status(tags[keys.BACKEND_JOB]).value == "SUCCEEDED", 60,
            message="the Ray job to end once its run ended",
        )  # fmt: skip

        # continue from the CLI on the cluster: a child run that goes on from the checkpoint
        out = run_cli(lab, "train", model.name, "--backend", "ray", "--address", head.url,
                      "--resume-from", handle.run_id, "--epochs", "1", "--json",
                      timeout=180)  # fmt: skip
        assert out.returncode == 0, out.stderr
        child = json.loads(out.stdout)
        assert child["status"] == "FINISHED"
        assert child["parent_run"] == handle.run_id
        assert child["lineage_epochs"] == int(stopped.data.tags[keys.EPOCHS_TOTAL]) + 1

        # a worker killed outright: any viewer (no Ray connection) marks its run FAILED
        dying = model.launch(epochs=LONG, backend="ray", address=head.url)
        pid = int(
            wait_until(lambda: dying.run.data.tags.get(keys.PID), 120, message="the worker's pid")
        )
        os.kill(pid, signal.SIGKILL)
        viewer = Lab(tracking_uri=mlflow_server.url, home=tmp_path / "viewer")
        summary = wait_until(
            lambda: next(
                (s for s in viewer.get_model(model.id).runs() if s.run_id == dying.run_id
                 and s.status == "FAILED"), None,
            ),
            60, message="the dead Ray worker's run marked FAILED",
        )  # fmt: skip
        assert f"pid {pid}" in summary.error
    finally:
        head.stop()


def test_a_launch_the_backend_cannot_run_is_refused_before_any_run_exists(local_lab, unique):
    model = local_lab.create_model(unique, config=FAST)
    dead_address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InvalidConfigError, match="Cannot reach the Ray cluster at .*ray start"):
        model.launch(epochs=1, backend="ray", address=dead_address)
    with pytest.raises(InvalidConfigError, match="needs the cluster's address.*RAY_ADDRESS"):
        model.launch(epochs=1, backend="ray")
    with pytest.raises(InvalidConfigError, match="cannot write to this machine's MLflow store"):
        model.launch(epochs=1, backend="ray", address="http://10.255.255.1:8265",
                     backend_options={"python": "python"})  # fmt: skip
    with pytest.raises(InvalidConfigError, match="gpus"):
        model.launch(epochs=1, backend="ray", address=dead_address, gpus=-1)
    with pytest.raises(PluginError, match="Unknown backend 'slurm'; installed: local, ray"):
        model.launch(epochs=1, backend="slurm")
    assert model.runs() == [], "no run was created"


def test_a_plugin_adds_a_backend_through_the_hook(local_lab, unique, tmp_path, monkeypatch):
    drop_task_file("child_backend.py", local_lab.settings.home / "tasks")
    monkeypatch.setenv("CHILD_LOG", str(tmp_path / "child.log"))
    lab = Lab(tracking_uri=local_lab.settings.tracking_uri, home=local_lab.settings.home)
    assert "child" in lab.plugins.registry("backends")
    model = lab.create_model(unique, config=FAST)
    handle = model.launch(epochs=LONG, backend="child")
    run = wait_until(
        lambda: (r := handle.run) and r.data.tags.get(keys.PID) and r,
        120, message="the worker to name its process",
    )  # fmt: skip
    assert run.data.tags[keys.BACKEND] == "child"
    assert int(run.data.tags[keys.PID]) == handle.job.process.pid, "the worker named itself"
    handle.stop(wait=False)
    assert handle.wait(timeout=120) == "KILLED", (tmp_path / "child.log").read_text()
