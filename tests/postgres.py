"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, a free port on
127.0.0.1, no password (trust on loopback), stopped at the end of the session.

PostgreSQL refuses to run as root; as root the cluster belongs to the `postgres` user that
Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from activelab.mlflow_server import free_port


def _tool(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return found[0] if found else shutil.which(name)


def postgres_missing() -> str | None:
    if _tool("initdb") is None or _tool("pg_ctl") is None:
        return "PostgreSQL is missing: run `bash .ci/setup` (it installs Debian's postgresql)."
    return None


@dataclass
class Postgres:
    folder: Path
    port: int
    run_as: list[str]

    @property
    def uri(self) -> str:
        return f"postgresql://activelab@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self.run_as, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        self._run(_tool("pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(folder: Path) -> Postgres:
    run_as: list[str] = []
    if os.geteuid() == 0:
        # initdb and postgres refuse root; the `postgres` user cannot enter pytest's private
        # temp dirs, so its cluster lives in a folder of its own directly under /tmp
        folder = Path(tempfile.mkdtemp(prefix="activelab-pg-"))
        shutil.chown(folder, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    folder.mkdir(parents=True, exist_ok=True)
    server = Postgres(folder, free_port(), run_as)
    data = folder / "data"
    server._run(_tool("initdb"), "-D", str(data), "-U", "activelab", "-A", "trust", "-E", "UTF8")
    # durability off: a test cluster is thrown away; sockets in our folder, not /var/run
    options = (
        f"-p {server.port} -c listen_addresses=127.0.0.1 -k {folder} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    server._run(
        _tool("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "postgres.log"),
        "-w", "-t", "60", "start",
    )  # fmt: skip
    return server
