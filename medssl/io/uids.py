"""Deterministic DICOM UIDs.

A derived series written twice from the same source with the same medssl version and
settings gets the same UIDs, so a re-run or a parallel shard agrees with the first run.

UIDs are ``2.25.<n>`` (ISO/IEC 9834-8 / DICOM PS3.5 B.2: a UUID-derived UID), with ``n`` the
first 128 bits of a SHA-256 over the inputs read as a big-endian unsigned integer, written in
decimal: at most 39 digits, so the UID stays within DICOM's 64 characters.
pydicom's ``generate_uid(prefix=None, entropy_srcs=...)`` ignores its entropy sources, which is
why this is computed here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_settings", "derive_uid"]


def canonical_settings(settings: Mapping[str, Any] | None) -> str:
    """A canonical JSON text of the operation's settings (sorted keys, no whitespace)."""
    return json.dumps(dict(settings or {}), sort_keys=True, separators=(",", ":"), default=str)


def derive_uid(*parts: str) -> str:
    """``2.25.`` + the first 128 bits of SHA-256 over ``parts`` (joined unambiguously).

    Example:
        >>> derive_uid("1.2.3", "0.1.0", '{"strength":1.0}', "series")[:5]
        '2.25.'
    """
    h = hashlib.sha256()
    for part in parts:
        data = str(part).encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    n = int.from_bytes(h.digest()[:16], "big")
    uid = f"2.25.{n}"
    assert len(uid) <= 64
    return uid
