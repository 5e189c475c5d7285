"""The user-facing error of the ``sbnn`` command line."""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A user-facing error: printed as one ``sbnn: error:`` line, exit status 2."""
