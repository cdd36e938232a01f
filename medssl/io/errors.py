"""Errors a user can act on.

Every message names the file, says what was expected and what to do. Messages never contain
patient-identifying DICOM values: they are built from paths, counts, shapes and the
non-identifying metadata of :mod:`medssl.io.safe_meta` only.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["InputError", "MedsslError", "MultipleSeriesError", "OutputError"]


class MedsslError(Exception):
    """An error with a message meant for the user (the CLI prints it without a traceback).

    Args:
        message: What is wrong.
        path: The file or folder concerned, if any.
        hint: What the user can do about it.
    """

    exit_code = 1

    def __init__(
        self, message: str, *, path: str | PathLike[str] | None = None, hint: str | None = None
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text += f"\n  What to do: {self.hint}"
        return text


class InputError(MedsslError, ValueError):
    """The input is missing, unreadable, or not what the command expects (CLI exit code 2)."""

    exit_code = 2


class OutputError(MedsslError):
    """An output could not be written (disk full, I/O error, a failed read-back); nothing was
    left under its final name (CLI exit code 4)."""

    exit_code = 4


class MultipleSeriesError(InputError):
    """A folder holds several DICOM series and none was chosen.

    Attributes:
        series: The non-identifying descriptions of the series found, in listing order.
    """

    def __init__(
        self,
        message: str,
        *,
        series: list[str],
        path: str | PathLike[str] | None = None,
        hint: str | None = None,
    ) -> None:
        self.series = list(series)
        super().__init__(message, path=path, hint=hint)
