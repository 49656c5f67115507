"""The app served for real: HTTP answers, the MLflow UI beside it, 127.0.0.1 only, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from helpers import drop_hanging_files, wait_until
from served import http_ok, start_app

from activelab.mlflow_server import free_port
from activelab.time_limit import TIME_LIMIT_ENV


def test_serve_starts_the_app_and_the_mlflow_ui_and_stops_both(tmp_path, empty_store):
    app = start_app(tmp_path / "home", "--mlflow-port", str(free_port()), empty_store=empty_store)
    try:
        with urllib.request.urlopen(app.url + "/") as response:
            page = response.read().decode()
        assert "<title>activelab</title>" in page
        output = app.output()
        assert f"activelab app:  {app.url}/" in output
        ui_url = re.search(r"MLflow UI:\s+(http://\S+?)/", output).group(1)
        assert ui_url.startswith("http://127.0.0.1:")
        wait_until(lambda: http_ok(ui_url + "/health"), timeout=90, message="the MLflow UI")
        listening = {
            c.laddr.ip
            for c in psutil.Process(app.process.pid).net_connections()
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}  # nothing listens on other interfaces
        children = psutil.Process(app.process.pid).children(recursive=True)
        assert children, "the MLflow UI runs as a child process"
    finally:
        code = app.stop()
    assert code == 0
    assert not http_ok(ui_url + "/health")  # Ctrl-C stopped the MLflow UI too
    wait_until(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
        timeout=30,
        message="children to exit",
    )


def test_the_app_answers_before_the_mlflow_ui_is_ready(tmp_path, empty_store):
    app = start_app(tmp_path / "home", "--mlflow-port", str(free_port()), empty_store=empty_store)
    try:
        output = app.output()
        ui_url = re.search(r"MLflow UI:\s+(http://\S+?)/", output).group(1)
        # start_app returned as soon as the app answered; MLflow takes ~10 s more
        assert "starting" in output
        assert http_ok(app.url + "/")
        wait_until(lambda: http_ok(ui_url + "/health"), timeout=90, message="the MLflow UI")
        # a second server on the same port says what to do and leaves the first alone
        env = {**os.environ, "ACTIVELAB_HOME": str(tmp_path / "other")}
        second = subprocess.run(
            [str(Path(sys.executable).with_name("activelab")), "serve", "--no-mlflow-ui",
             "--port", app.url.rsplit(":", 1)[1]],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert second.returncode == 1
        assert "is in use" in second.stderr and "--port" in second.stderr
        assert http_ok(app.url + "/")
    finally:
        app.stop()


def test_the_app_starts_beside_a_task_file_whose_import_hangs(tmp_path, empty_store, monkeypatch):
    monkeypatch.setenv(TIME_LIMIT_ENV, "2")
    home = tmp_path / "home"
    drop_hanging_files(home / "tasks")  # the app's default task folder
    app = start_app(home, "--no-mlflow-ui", empty_store=empty_store)  # it answers
    try:
        wait_until(
            lambda: "spin.py" in app.output() and "sleeper.py" in app.output(),
            timeout=60,
            message="the app to name the hanging task files",
        )
        assert "did not finish within 2 s" in app.output()
        assert http_ok(app.url + "/")
    finally:
        app.stop()


def _raw_request(port: int, head: bytes) -> bytes:
    """Send `head` as a whole request on a fresh connection; everything answered, to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_oversized_requests_get_a_status_and_a_reason_not_a_reset(tmp_path, empty_store):
    app = start_app(tmp_path / "home", "--no-mlflow-ui", empty_store=empty_store)
    try:
        port = int(app.url.rsplit(":", 1)[1])
        host = f"Host: 127.0.0.1:{port}\r\n".encode()
        huge = b"GET / HTTP/1.1\r\n" + host + b"X-Filler: " + b"a" * 2**20 + b"\r\n\r\n"
        answer = _raw_request(port, huge)  # a reset would raise ConnectionResetError here
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"cookies" in answer
        # a browser with a 100 KB cookie
        cookie = urllib.request.Request(app.url + "/", headers={"Cookie": "c=" + "x" * 100_000})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(cookie, timeout=30)
        assert refused.value.code == 431
        assert "too large" in refused.value.read().decode()
        # framing it cannot read (a chunk length line that never ends): 400, not a reset
        chunked = b"POST / HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 200
        assert _raw_request(port, chunked).startswith(b"HTTP/1.1 400 ")
        assert http_ok(app.url + "/")  # and the app goes on answering
        assert "Traceback" not in app.output()
    finally:
        app.stop()


def test_panel_serve_of_the_documented_module(tmp_path):
    path = subprocess.run(
        [str(Path(sys.executable).with_name("activelab")), "app-path"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert path.endswith("panel_app/app.py")
    port = free_port()
    env = {**os.environ, "ACTIVELAB_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("panel")),
            "serve",
            path,
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/app"), timeout=90, message="panel serve"
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def _websocket(port: int, origin: str, token: str) -> str:
    """Open the app's websocket as a browser at `origin` would; 'accepted' or why not."""
    import asyncio

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    async def attempt() -> str:
        request = HTTPRequest(
            f"ws://127.0.0.1:{port}/ws",
            headers={"Origin": origin, "Sec-WebSocket-Protocol": f"bokeh, {token}"},
        )
        try:
            connection = await websocket_connect(request)
        except Exception as exc:
            return f"refused: {exc}"
        connection.close()
        return "accepted"

    # in a thread of its own: an earlier test in this worker may have left a loop running here
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(attempt())).result(timeout=60)


def test_only_the_app_s_own_pages_and_names_can_drive_it(tmp_path, empty_store):
    import urllib.error

    from click.testing import CliRunner

    from activelab.cli.main import cli

    served = start_app(tmp_path / "home", "--no-mlflow-ui", empty_store=empty_store)
    try:
        port = int(served.url.rsplit(":", 1)[1])
        html = urllib.request.urlopen(served.url + "/").read().decode()
        token = re.search(r'"token":"([^"]+)"', html).group(1)
        assert _websocket(port, f"http://127.0.0.1:{port}", token) == "accepted"
        assert _websocket(port, f"http://localhost:{port}", token) == "accepted"
        # DNS rebinding: another site's page, whose name now points at this machine
        assert "403" in _websocket(port, f"http://rebound.example:{port}", token)
        # the same rebound name reading the pages over plain HTTP
        foreign = urllib.request.Request(
            served.url + "/", headers={"Host": f"rebound.example:{port}"}
        )
        try:
            urllib.request.urlopen(foreign)
            raise AssertionError("a page was served to a foreign host name")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
        # a session id the server did not sign
        try:
            urllib.request.urlopen(served.url + "/?bokeh-session-id=made-up-by-a-caller")
            raise AssertionError("a made-up session id was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
    finally:
        served.stop()
    # every interface, but no names given: refused before anything starts
    home = str(tmp_path / "open")
    out = CliRunner().invoke(
        cli, ["--home", home, "serve", "--host", "0.0.0.0", "--no-mlflow-ui", "--port", "1"]
    )
    assert out.exit_code == 1 and "--allow-origin" in out.output
    out = CliRunner().invoke(
        cli, ["--home", home, "serve", "--host", "0.0.0.0", "--allow-origin", "*", "--port", "1"]
    )
    assert out.exit_code == 1 and "not '*'" in out.output


def users_file_of_ada(tmp_path: Path) -> Path:
    """A users file made the documented way, with one user (ada, "correct horse battery")."""
    from click.testing import CliRunner

    from activelab.cli.main import cli

    users = tmp_path / "users.json"
    out = CliRunner().invoke(
        cli, ["users", "add", "ada", "--file", str(users), "--password-stdin"],
        input="correct horse battery\n",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    return users


def test_a_login_guards_every_page_and_only_hashes_are_stored(tmp_path, empty_store):
    import http.cookiejar
    import json
    import urllib.error
    import urllib.parse

    from click.testing import CliRunner

    from activelab.cli.main import cli

    users = users_file_of_ada(tmp_path)
    assert "correct horse" not in users.read_text()
    assert json.loads(users.read_text())["ada"].startswith("scrypt$")
    assert users.stat().st_mode & 0o077 == 0  # readable by its owner only
    short = CliRunner().invoke(
        cli, ["users", "add", "bob", "--file", str(users), "--password-stdin"], input="short\n"
    )
    assert short.exit_code == 1 and "at least 8" in short.output
    # a missing users file is refused before anything starts
    missing = CliRunner().invoke(
        cli, ["--home", str(tmp_path / "h"), "serve", "--auth", str(tmp_path / "nope.json")]
    )
    assert missing.exit_code == 1 and "activelab users add" in missing.output

    served = start_app(
        tmp_path / "home", "--no-mlflow-ui", "--auth", str(users), empty_store=empty_store
    )
    try:

        def opener() -> urllib.request.OpenerDirector:
            jar = http.cookiejar.CookieJar()
            return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def log_in(browser: urllib.request.OpenerDirector, password: str) -> str:
            form = urllib.parse.urlencode({"username": "ada", "password": password}).encode()
            with browser.open(served.url + "/login", data=form) as response:
                return response.geturl()

        stranger = opener()
        with stranger.open(served.url + "/") as response:
            assert "/login" in response.geturl()  # sent to the login page
            assert '"token"' not in response.read().decode()  # no session for a stranger
        assert "error" in log_in(stranger, "wrong password")
        with stranger.open(served.url + "/") as response:
            assert "/login" in response.geturl()

        member = opener()
        assert "error" not in log_in(member, "correct horse battery")
        with member.open(served.url + "/") as response:
            assert "/login" not in response.geturl()
            assert '"token"' in response.read().decode()  # the app itself
    finally:
        served.stop()
    assert "Traceback" not in served.output(), served.output()


def test_with_a_login_the_mlflow_ui_is_not_started_beside_the_app(tmp_path, empty_store):
    """MLflow's UI has no login: beside a login it would hand the store to anyone."""
    import urllib.error

    users = users_file_of_ada(tmp_path)
    mlflow_port = free_port("127.0.0.2")
    served = start_app(
        tmp_path / "home", "--auth", str(users), "--mlflow-port", str(mlflow_port),
        empty_store=empty_store, host="127.0.0.2",  # another address than the default's
    )  # fmt: skip
    try:
        output = served.output()
        assert "after logging in" in output  # who can reach the app
        assert "MLflow UI:      not started" in output and "basic-auth" in output
        # an unauthenticated MLflow REST call finds no server to answer it, on any address
        for host in ("127.0.0.2", "127.0.0.1"):
            search = urllib.request.Request(
                f"http://{host}:{mlflow_port}/api/2.0/mlflow/experiments/search",
                data=b'{"max_results": 10}',
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.URLError):
                urllib.request.urlopen(search, timeout=5)
        children = psutil.Process(served.process.pid).children(recursive=True)
        assert not [c for c in children if "mlflow" in " ".join(c.cmdline())]
        with urllib.request.urlopen(served.url + "/") as response:
            assert "/login" in response.geturl()  # the app itself asks for the login
    finally:
        served.stop()
    assert "Traceback" not in served.output(), served.output()
