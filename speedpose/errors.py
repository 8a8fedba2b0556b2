"""The one exception hierarchy of speedpose.

Every error caused by user input (a file, a line of it, a config key, a command-line value) is raised as a
:class:`SpeedposeError` subclass whose message says what was expected, what was found and where.  The CLI maps
all of them to exit code 2 and a one-line message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

from pathlib import Path


class SpeedposeError(Exception):
    """Base class of every error that speedpose reports to a user as bad input or a failed precondition."""

    exit_code = 2


class InputError(SpeedposeError):
    """A file or value given by the user is malformed.

    Args:
        message: what is wrong (what was expected and what was found).
        path: the offending file, when there is one.
        where: a location inside the file, e.g. ``"line 12"`` or ``"index 3 (img000004.jpg)"``.
    """

    def __init__(self, message: str, path: str | Path | None = None, where: str | None = None):
        self.path = None if path is None else Path(path)
        self.where = where
        self.detail = message
        prefix = ""
        if path is not None:
            prefix = f"{path}"
            if where:
                prefix += f", {where}"
            prefix += ": "
        elif where:
            prefix = f"{where}: "
        super().__init__(prefix + message)


class ConfigError(SpeedposeError):
    """A configuration file or override is invalid (unknown key, wrong type, out of range)."""


class ShapeError(SpeedposeError, ValueError):
    """An array given to a library function has the wrong shape (message shows expected and actual)."""


class MissingWeightsError(SpeedposeError):
    """Pretrained weights were requested but the file is not where it must be."""
