"""A real local Ray head for the `ray` backend's tests: `ray start --head --block` with every
port it opens chosen free on 127.0.0.1, its own temp folder, and 2 CPUs; stopped by a signal
to that process, with anything left of it killed by its folder's name."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
from helpers import wait_until

WORKER_PORTS = 200


def distinct_free_ports(count: int) -> list[int]:
    """`count` free ports, all different: each socket stays bound until all are chosen (a
    port freed at once may be handed out again, which Ray refuses)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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
    names = [
        "--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
        "--node-manager-port", "--object-manager-port",
    ]  # fmt: skip
    chosen = distinct_free_ports(len(names) + 1)
    ports = dict(zip(names, chosen, strict=False))
    first_worker_port = chosen[-1]
    # Ray refuses a worker port range that holds another part's port
    while any(0 <= port - first_worker_port <= WORKER_PORTS for port in chosen[:-1]):
        first_worker_port += WORKER_PORTS + 1
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
        "--max-worker-port", str(first_worker_port + WORKER_PORTS),
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
