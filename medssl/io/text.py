"""Header values made safe to print: :func:`printable`.

A DICOM header (or any file header) is untrusted text. Printed raw, an ESC sequence in a
SeriesDescription can move the cursor, rewrite earlier lines, set the window title or hide
text on the user's terminal, and a newline can forge a log line. Every header value medssl
prints goes through :func:`printable` first.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["printable"]

# ESC sequences (ECMA-48): CSI ``ESC [ params intermediates final``; OSC, DCS, SOS, PM and APC
# strings up to their terminator (ST = ``ESC \\`` or BEL) or the end of the text; any other
# ``ESC intermediates final``; and the single-byte C1 forms of CSI and of the string controls.
_ESC_SEQUENCE = re.compile(
    r"""
      \x1b\[ [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]?
    | \x1b[\]PX^_] .*? (?:\x07|\x1b\\|\x9c|\Z)
    | \x1b [\x20-\x2f]* [\x30-\x7e]?
    | \x9b [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]?
    | [\x90\x98\x9d\x9e\x9f] .*? (?:\x07|\x1b\\|\x9c|\Z)
    """,
    re.VERBOSE | re.DOTALL,
)
# Unicode categories that print nothing visible or reorder text: controls (C0, DEL, C1),
# format characters (bidirectional overrides, zero-width characters), surrogates, private
# use, unassigned code points, and line/paragraph separators.
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_WHITESPACE_CONTROLS = {"\t", "\n", "\r", "\v", "\f", "\u2028", "\u2029", "\x85"}


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):  # list, tuple, pydicom's MultiValue
        return "\\".join(_as_text(v) for v in value)  # DICOM's value separator
    return str(value)


def printable(value: object, max_len: int | None = 64) -> str:
    """``value`` as text that is safe to print on a terminal or in a log line.

    Removes ESC sequences (CSI, OSC, DCS, ... and their single-byte C1 forms), every C0 and C1
    control character and DEL, Unicode format characters (bidirectional overrides, zero-width
    characters), surrogates, private-use and unassigned code points. Tabs, line breaks and
    other whitespace controls become one space, runs of spaces are collapsed and the ends
    stripped. Text longer than ``max_len`` characters is cut and ends with ``…``.

    Args:
        value: A header value: ``str``, ``bytes`` (read as UTF-8), a pydicom value (multi-values
            are joined with ``\\``), a number, or ``None`` (gives ``""``).
        max_len: The most characters returned (at least 1); ``None`` for no limit.

    Returns:
        Text without control characters, at most ``max_len`` characters long.

    Example:
        >>> printable("Chest\\x1b[2J\\x1b]0;owned\\x07 CT\\r\\nfake line")
        'Chest CT fake line'
    """
    text = _ESC_SEQUENCE.sub("", _as_text(value))
    kept = []
    for ch in text:
        if ch in _WHITESPACE_CONTROLS:
            kept.append(" ")
        elif unicodedata.category(ch) not in _DROPPED_CATEGORIES:
            kept.append(ch)
    text = re.sub(r" {2,}", " ", "".join(kept)).strip()
    if max_len is not None and len(text) > max(1, max_len):
        text = text[: max(1, max_len) - 1].rstrip() + "…"
    return text
