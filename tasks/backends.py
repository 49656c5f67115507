"""The built-in launcher backends: `local` (a worker process on this machine) and `ray`
(a Ray job; it needs the `ray` extra, and says so when a launch asks for it without Ray)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from activelab.backend import LocalBackend
from activelab.hookspecs import hookimpl
from activelab.tasks.ray_backend import RayBackend

if TYPE_CHECKING:
    from collections.abc import Callable


@hookimpl
def register_backends(register: Callable[[type], None]) -> None:
    for cls in (LocalBackend, RayBackend):
        register(cls)
