"""Small helpers shared by tests."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
TASK_FILES = Path(__file__).parent / "tasks"

# A small network so a real training run on digits takes a second or two.
FAST = {"trainer.hidden_dims": "[32]", "trainer.batch_size": "256", "trainer.recon_images": "4"}


def wait_until(
    check: Callable[[], T], timeout: float = 60.0, interval: float = 0.1, message: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy (never asserts on time itself)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


def drop_task_file(name: str, folder: Path) -> Path:
    """Copy one of tests/tasks/*.py into a watched folder."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copyfile(TASK_FILES / name, target)
    return target
