"""Start the real app (`activelab serve`) for HTTP and browser tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from helpers import wait_until

from activelab.mlflow_server import free_port


@dataclass
class ServedApp:
    url: str
    process: subprocess.Popen
    home: Path
    log: Path
    tracking_uri: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """Ctrl-C, the way a person stops it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def start_app(
    home: Path,
    *extra: str,
    tracking_uri: str | None = None,
    port: int | None = None,
    empty_store: Path | None = None,
    host: str = "127.0.0.1",
) -> ServedApp:
    """Serve the app for `home`; on its default store, a copy of `empty_store` (a migrated
    database, see conftest) when given, which saves the app ~2 s of schema set-up."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    if empty_store is not None and tracking_uri is None and not (home / "mlflow.db").exists():
        shutil.copyfile(empty_store, home / "mlflow.db")
    log = home / "serve.log"
    env = {**os.environ, "ACTIVELAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    script = Path(sys.executable).with_name("activelab")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(script), "serve", "--port", str(port), *extra]
            + (["--host", host, "--allow-origin", f"{host}:{port}"] if host != "127.0.0.1" else []),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    app = ServedApp(
        f"http://{host}:{port}",
        process,
        home,
        log,
        tracking_uri or f"sqlite:///{home / 'mlflow.db'}",
    )
    try:
        wait_until(
            lambda: process.poll() is not None or http_ok(app.url + "/"),
            timeout=90,
            message="the app to answer",
        )
    except AssertionError:
        app.stop()
        raise
    assert process.poll() is None, app.output()
    return app
