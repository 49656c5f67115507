"""The codebase's own checks, run with the suite: lint and the type check of the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_the_package_passes_its_type_check():
    # mypy reads the installed package: `.ci/setup` installs it as a tree of links
    # (editable_mode=strict), which type checkers follow, unlike an import hook.
    result = _run(str(BIN / "mypy"), "-p", "activelab")
    assert result.returncode == 0, f"mypy -p activelab:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout


def test_the_code_is_lint_clean():
    result = _run(str(BIN / "ruff"), "check", "plugin", "panel_app", "tasks", "tests", "examples")
    assert result.returncode == 0, f"ruff check:\n{result.stdout}{result.stderr}"
    result = _run(str(BIN / "ruff"), "format", "--check", "plugin", "panel_app", "tasks")
    assert result.returncode == 0, f"ruff format --check:\n{result.stdout}{result.stderr}"


def test_the_installed_package_is_this_checkout():
    """Tracebacks and editors lead to the files in this checkout, not to a copy."""
    import activelab
    import activelab.panel_app

    assert Path(activelab.__file__).resolve() == ROOT / "plugin" / "__init__.py"
    assert Path(activelab.panel_app.__file__).resolve() == ROOT / "panel_app" / "__init__.py"
    assert (ROOT / "plugin" / "py.typed").exists()
