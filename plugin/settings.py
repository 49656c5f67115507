"""Where activelab keeps its data and which MLflow store it talks to.

Resolution order for the tracking store: an explicit argument, then `MLFLOW_TRACKING_URI`,
then the embedded default: a sqlite database and an artifact folder under the data directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from activelab.errors import InvalidConfigError

HOME_ENV = "ACTIVELAB_HOME"
TASKS_DIRS_ENV = "ACTIVELAB_TASKS_DIRS"
ARTIFACT_ROOT_ENV = "ACTIVELAB_ARTIFACT_ROOT"
DEFAULT_HOME = "~/.activelab"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: `explicit`, else `$ACTIVELAB_HOME`, else `~/.activelab`."""
    raw = explicit or os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def embedded_tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def is_remote(uri: str) -> bool:
    """True for a tracking server reached over HTTP(S)."""
    return urlparse(uri).scheme in ("http", "https")


@dataclass(frozen=True)
class Settings:
    """The resolved locations one `Lab` works with."""

    home: Path
    tracking_uri: str
    # Where new models put their artifacts; None lets the tracking server decide.
    artifact_root: str | None
    tasks_dirs: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def embedded(self) -> bool:
        return self.tracking_uri == embedded_tracking_uri(self.home)

    @classmethod
    def resolve(
        cls,
        tracking_uri: str | None = None,
        home: str | os.PathLike | None = None,
        tasks_dirs: Sequence[str | os.PathLike[str]] | None = None,
    ) -> Settings:
        root = data_dir(home)
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or embedded_tracking_uri(root)
        file_store = urlparse(uri).scheme in ("", "file")
        if file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
            raise InvalidConfigError(
                f"Tracking URI {uri!r} is a file store, which MLflow 3 retired; "
                "use a sqlite:/// URI or an http:// tracking server."
            )
        artifact_root = os.environ.get(ARTIFACT_ROOT_ENV)
        db_path = _sqlite_path(uri)
        if artifact_root is None and db_path is not None:
            # Keep a local store's artifacts beside its database, not in the current folder.
            artifact_root = str(db_path.parent / "artifacts")
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        dirs = [Path(d).expanduser().resolve() for d in (tasks_dirs or [])]
        env_dirs = os.environ.get(TASKS_DIRS_ENV)
        if env_dirs:
            dirs += [Path(d).expanduser().resolve() for d in env_dirs.split(os.pathsep) if d]
        dirs.append(root / "tasks")
        # the drop-in folder exists from the first use on, so `cp my_task.py` into it works
        with contextlib.suppress(OSError):  # a read-only home: watching it says so later
            (root / "tasks").mkdir(parents=True, exist_ok=True)
        unique = tuple(dict.fromkeys(dirs))
        return cls(home=root, tracking_uri=uri, artifact_root=artifact_root, tasks_dirs=unique)
