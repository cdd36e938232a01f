"""The errors a user sees, and the exit codes the ``medssl`` command maps them to.

Every message names the file, says what was expected and what to do. Messages never contain
patient-identifying DICOM values: they are built from paths, counts, shapes and the
non-identifying metadata of :mod:`medssl.io.safe_meta` only.

The command (:func:`medssl.cli.app.main`) prints a :class:`MedsslError` without a traceback
and exits with its ``exit_code``:

================================  =====  ==================================================
error                             code   meaning
================================  =====  ==================================================
:class:`MedsslError`              1      any other error meant for the user
:class:`InputError`               2      bad input or an unusable output location, found
                                         before any work
:class:`MultipleSeriesError`      2      a folder holds several DICOM series, none chosen
:class:`TrainingDivergedError`    1      a training loss became NaN or infinite
:class:`OutputError`              4      an output could not be written; nothing was left
                                         under its final name
================================  =====  ==================================================

The other codes of the command (0 success, 1 internal error, 3 some series skipped,
130 interrupted) are listed in :mod:`medssl.cli.app`.

This module imports nothing of medssl, so that every package (``io`` at the bottom
included) may import it.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "InputError",
    "MedsslError",
    "MultipleSeriesError",
    "OutputError",
    "TrainingDivergedError",
]


class MedsslError(Exception):
    """An error with a message meant for the user (the CLI prints it without a traceback and
    exits with :attr:`exit_code`, 1).

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
    """A folder holds several DICOM series and none was chosen (CLI exit code 2).

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


class TrainingDivergedError(MedsslError):
    """A training loss became NaN or infinite (CLI exit code 1): the message names the step,
    the precision and the learning rate; the hint says what to change. The run folder keeps
    its last checkpoint."""
