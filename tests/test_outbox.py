"""The run outbox: nothing a run logs is lost while the tracking server is down, the loop never
waits on it, and what a run could not send is delivered later (`activelab runs sync`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import wait_until
from mlflow import MlflowClient

from activelab import keys
from activelab.outbox import Outbox, Spool, deliver_pending, outbox_root
from activelab.settings import Settings
from activelab.tracking import Tracking

pytestmark = pytest.mark.server


def _tracking(uri: str, home) -> Tracking:
    return Tracking(Settings.resolve(uri, home))


def _history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _artifacts(client: MlflowClient, run_id: str, folder: str) -> list[str]:
    return sorted(f.path for f in client.list_artifacts(run_id, folder))


def _write(text: str):
    return lambda path: path.write_text(text)


def test_a_server_outage_loses_nothing_and_never_blocks_the_loop(killable_server, tmp_path):
    client = MlflowClient(killable_server.url)
    experiment = client.create_experiment("outage")
    run_id = client.create_run(experiment).info.run_id
    home = tmp_path / "home"
    outbox = Outbox(
        _tracking(killable_server.url, home), run_id, experiment, home, interval=0.2
    ).start()

    for step in range(10):
        outbox.add({"loss": 1.0 / (step + 1)}, step)
    outbox.artifact("epoch-0001.pt", "checkpoints", _write("one"))
    wait_until(lambda: _history(client, run_id, "loss") == list(range(10)), 30, message="sent")

    killable_server.kill()
    for step in range(10, 20):
        outbox.add({"loss": 1.0 / (step + 1)}, step)
    outbox.artifact(
        "epoch-0002.pt", "checkpoints", _write("two"),
        tags={keys.LAST_CHECKPOINT: "checkpoints/epoch-0002.pt"},
    )  # fmt: skip
    outbox.image("reconstructions", np.zeros((8, 8, 3), dtype=np.uint8), 2)
    outbox.set_run_tags({"phase": "during the outage"})
    wait_until(lambda: outbox.unreachable_since is not None, 30, message="the outage noticed")
    # what was logged during the outage is on disk, not only in memory
    spool = Spool(outbox_root(home) / run_id)
    wait_until(lambda: any(e["kind"] == "batch" for e in spool.pending()), 30, message="spilled")
    kinds = {e["kind"] for e in spool.pending()}
    assert {"artifact", "image", "batch"} <= kinds

    killable_server.start()
    wait_until(lambda: outbox.unreachable_since is None, 60, message="the server seen again")
    assert outbox.close("FINISHED", wait_s=30)
    assert not spool.folder.exists(), "a delivered spool is removed"

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _history(client, run_id, "loss") == list(range(20))
    assert run.data.tags["phase"] == "during the outage"
    assert run.data.tags[keys.LAST_CHECKPOINT] == "checkpoints/epoch-0002.pt"
    checkpoints = _artifacts(client, run_id, "checkpoints")
    assert checkpoints == ["checkpoints/epoch-0001.pt", "checkpoints/epoch-0002.pt"]
    assert _artifacts(client, run_id, "images"), "the image reached the run"


def test_what_a_run_could_not_send_is_delivered_by_runs_sync(killable_server, tmp_path):
    from activelab.cli.main import cli

    client = MlflowClient(killable_server.url)
    experiment = client.create_experiment("later")
    run_id = client.create_run(experiment).info.run_id
    home = tmp_path / "home"
    outbox = Outbox(
        _tracking(killable_server.url, home), run_id, experiment, home, interval=0.2
    ).start()
    killable_server.kill()
    outbox.add({"loss": 0.5}, 7)
    outbox.artifact("epoch-0003.pt", "checkpoints", _write("three"))
    assert not outbox.close("FINISHED", wait_s=0), "nothing can be delivered while it is down"
    spool = Spool(outbox_root(home) / run_id)
    assert json.loads((spool.folder / "manifest.json").read_text())["run_id"] == run_id
    assert [e["kind"] for e in spool.pending()][-1] == "end"

    # another process holding the spool (its run still live) is left alone
    other = Spool(spool.folder)
    assert other.acquire()
    assert deliver_pending(home, _tracking(killable_server.url, home))["runs"] == 0
    other.release()

    killable_server.start()
    result = CliRunner().invoke(
        cli, ["--tracking-uri", killable_server.url, "--home", str(home), "runs", "sync"]
    )
    assert result.exit_code == 0, result.output
    assert "Delivered 3 item(s) of 1 run(s)." in result.output  # checkpoint, metrics, end
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _history(client, run_id, "loss") == [7]
    assert _artifacts(client, run_id, "checkpoints") == ["checkpoints/epoch-0003.pt"]
    assert not spool.folder.exists()


def test_a_spool_entry_cannot_name_a_path_outside_its_folder(tmp_path, local_uri):
    client = MlflowClient(local_uri)
    experiment = client.create_experiment("spool")
    run_id = client.create_run(experiment).info.run_id
    spool = Spool(outbox_root(tmp_path / "home") / run_id)
    assert spool.acquire()
    spool.write_manifest(local_uri, run_id, experiment)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the store")
    escape = {"kind": "artifact", "token": "ab", "file": "../../secret.txt", "artifact_dir": ""}
    spool.append(escape)
    spool.release()
    counts = deliver_pending(tmp_path / "home", _tracking(local_uri, tmp_path / "home"))
    assert counts == {"runs": 1, "items": 1, "pending": 0}, "the entry is skipped, not followed"
    assert client.list_artifacts(run_id) == []
    assert not spool.folder.exists()
