"""A real local Ray head for the `ray` backend's tests: `ray start --head --block` with every
port it opens chosen free on 127.0.0.1, its own temp folder, and 2 CPUs; stopped by a signal
to that process, with anything left of it killed by its folder's name."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
from helpers import wait_until

from activelab.mlflow_server import free_port


@dataclass
class RayHead:
    url: str  # the dashboard, where Ray Jobs are submitted
    folder: Path
    process: subprocess.Popen

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/version", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # --block: it stops what it started
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for process in psutil.process_iter(["cmdline"]):
            if str(self.folder) in " ".join(process.info["cmdline"] or []):
                process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_ray_head(home: Path, timeout: float = 120) -> RayHead:
    """A head whose jobs run this interpreter's `python` with ACTIVELAB_HOME=`home`."""
    # Ray's socket paths must stay short: a folder directly under /tmp
    folder = Path(tempfile.mkdtemp(prefix="ray-"))
    ports = {
        "--port": free_port(),
        "--dashboard-port": free_port(),
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
    }
    first_worker_port = free_port()
    env = {
        **os.environ,
        # the job's `python` is this interpreter, which has activelab installed
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ACTIVELAB_HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
        "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "true",
        "--temp-dir", str(folder), "--disable-usage-stats",
        "--min-worker-port", str(first_worker_port),
        "--max-worker-port", str(first_worker_port + 200),
        *[str(part) for pair in ports.items() for part in pair],
    ]  # fmt: skip
    log = (folder / "head.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    head = RayHead(f"http://127.0.0.1:{ports['--dashboard-port']}", folder, process)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"ray start exited {process.returncode}:\n{(folder / 'head.log').read_text()}"
            )
        return head.answers()

    try:
        wait_until(ready, timeout, interval=0.5, message="the Ray head's dashboard to answer")
    except BaseException:
        head.stop()
        raise
    return head
