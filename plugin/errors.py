"""Errors that reach a person: each says what went wrong and what to do next."""

from __future__ import annotations


class ActivelabError(Exception):
    """Base class for every error activelab raises on purpose.

    The message is one sentence a person can act on; the CLI prints it to stderr
    and exits non-zero, the app shows it in a notification.
    """


class ModelNotFoundError(ActivelabError, LookupError):
    """No activelab model has the given name or id."""


class ModelExistsError(ActivelabError):
    """A model (or another MLflow experiment) already uses the name."""


class InvalidConfigError(ActivelabError, ValueError):
    """A config value, preset or override is not valid."""


class ModelDeletedError(InvalidConfigError):
    """The model was deleted (maybe by another process) before a change could be written."""


class InvalidLabelError(ActivelabError, ValueError):
    """A label or sample index does not fit the model's data set."""


class LabelFileError(ActivelabError, ValueError):
    """A labels CSV could not be read; the message names the line."""


class NothingToUndoError(ActivelabError):
    """Undo or redo was asked for with an empty history."""


class PluginError(ActivelabError):
    """A plugin, task, trainer, data set or strategy is unknown or broken."""


class DatasetUnavailableError(ActivelabError):
    """A data set's files are missing and cannot be fetched."""


class TrainingError(ActivelabError):
    """Training could not start or ended in an error."""


class RunNotFoundError(ActivelabError, LookupError):
    """No run or checkpoint matches what was asked for."""


class StorageError(ActivelabError, OSError):
    """A file could not be written where the store keeps it (read-only, full, no permission)."""


class ServerUnreachableError(ActivelabError, ConnectionError):
    """The tracking server did not answer within the time allowed."""


class PermissionDeniedError(ActivelabError, PermissionError):
    """The tracking server (MLflow's auth app) refused this user; the message says what to ask."""
