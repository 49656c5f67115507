"""The `activelab` command line: models, labels, training, plugins and the app."""

from __future__ import annotations

from activelab.cli.main import main

__all__ = ["main"]
