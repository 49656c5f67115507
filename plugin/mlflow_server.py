"""Start and stop a local `mlflow server` (the MLflow UI beside the app, and the tests' server)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from activelab.errors import ActivelabError


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        process.send_signal(sig)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies, even from SIGKILL (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _mlflow_command() -> list[str]:
    # The `mlflow` script beside this interpreter, so a venv's server matches its client.
    script = Path(sys.executable).with_name("mlflow")
    if script.exists():
        return [str(script)]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


@dataclass
class MlflowServer:
    """A running `mlflow server` child process."""

    url: str
    process: subprocess.Popen
    log_path: Path | None = None
    _log: object = field(default=None, repr=False)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 90.0) -> MlflowServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ActivelabError(
                    f"mlflow server exited with code {self.process.returncode}; "
                    f"see {self.log_path} for its output."
                )
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise ActivelabError(f"mlflow server did not answer on {self.url} within {timeout:.0f} s.")

    def stop(self, timeout: float = 10.0) -> None:
        # The server runs in its own session with worker children: signal the whole group.
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def start_mlflow_server(
    backend_store_uri: str,
    *,
    artifacts_destination: str | None = None,
    default_artifact_root: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: Path | None = None,
    app_name: str | None = None,
    extra_env: dict[str, str] | None = None,
    die_with_parent: bool = True,
) -> MlflowServer:
    """Start `mlflow server` on host:port (a free port if None); call `wait_ready()` next.

    One worker and no job execution: it starts in ~10 s instead of ~30 s (DESIGN.md).
    `app_name="basic-auth"` turns MLflow's authentication on (configured by `extra_env`'s
    MLFLOW_AUTH_CONFIG_PATH). With `die_with_parent` off it outlives this process: whoever
    started it stops its process group.
    """
    port = port or free_port(host)
    command = [
        *_mlflow_command(),
        "server",
        "--backend-store-uri", backend_store_uri,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    if artifacts_destination:
        command += ["--artifacts-destination", artifacts_destination]
    if default_artifact_root:
        command += ["--default-artifact-root", default_artifact_root]
    if app_name:
        command += ["--app-name", app_name]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=(
            _die_with_parent if die_with_parent and sys.platform.startswith("linux") else None
        ),
    )
    return MlflowServer(f"http://{host}:{port}", process, log_path, log if log_path else None)
