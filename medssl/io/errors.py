"""The user-facing errors, kept here for code that imports them from ``medssl.io.errors``.

They live in :mod:`medssl.errors` (with their exit codes); import them from there.
"""

from __future__ import annotations

from medssl.errors import InputError, MedsslError, MultipleSeriesError, OutputError

__all__ = ["InputError", "MedsslError", "MultipleSeriesError", "OutputError"]
