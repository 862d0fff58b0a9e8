"""Errors that the CLI turns into one-line messages and exit codes.

Exit codes (documented in the README):
  0  success
  2  usage error (bad option, bad combination of options)
  3  bad input (unreadable, corrupt or unsupported input file, HDRI or matte)
  4  output problem (exists without --overwrite, equals an input, unwritable)
  5  internal error (a bug: please report it with --debug output), or out of memory
  130 interrupted (Ctrl-C); no partial output is left behind
"""
from __future__ import annotations


class RelightError(Exception):
    """Base class: an error with a user-facing one-line message."""

    exit_code = 5

    def __init__(self, message: str, path: "str | None" = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class UsageError(RelightError):
    """A bad option value or combination of options."""

    exit_code = 2


class InputError(RelightError):
    """An input file (video, image, HDRI, matte, background) is missing, unreadable or unsupported."""

    exit_code = 3


class OutputError(RelightError):
    """The output cannot be written where asked."""

    exit_code = 4


class RelightWarning(UserWarning):
    """A recoverable problem with an input (e.g. an HDRI that is not 2:1, or has NaN pixels) that
    relight fixed up; shown to the user as a one-line warning."""
