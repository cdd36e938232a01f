"""How large an image medssl agrees to read: the voxel cap and the header-size checks.

Image headers are untrusted: a 1 KB file can claim 100000³ voxels. Every reader checks what its
header claims **before allocating anything**, in two ways:

* against the file: the claimed bytes of image data must fit in what the file can hold (its size
  for raw data; an upper bound for compressed data, e.g. 1032 bytes per byte of deflate data);
* against the voxel cap (:func:`max_voxels`): at most ``MEDSSL_MAX_VOXELS`` voxels, by default
  the float32 voxels that fill a quarter of this machine's memory (the smaller of the physical
  memory and a container's cgroup limit), and never more than 2**31 (8 GiB as float32).

Compressed data has no cheap exact size (a gzip ISIZE trailer is the size modulo 2**32 of the
last member only), so the bound is used first; a ``.nii.gz`` that passes it and the cap is then
decompressed in 4 MiB chunks that are counted and dropped, never further than the header claims
(constant memory; time bounded by the cap), before ITK allocates the image.

A failed check raises :class:`~medssl.io.InputError` saying what the header claims, what the
file holds, what was expected and, for the cap, how to raise it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from medssl.errors import InputError

__all__ = [
    "DEFLATE_MAX_RATIO",
    "MAX_VOXELS_CEILING",
    "MAX_VOXELS_ENV",
    "check_image_size",
    "default_max_voxels",
    "max_voxels",
]

#: The environment variable that overrides the voxel cap (a whole number of voxels).
MAX_VOXELS_ENV = "MEDSSL_MAX_VOXELS"

#: The default cap never exceeds this many voxels (8 GiB as float32), whatever the memory.
MAX_VOXELS_CEILING = 2**31

#: Deflate (gzip, zlib) cannot expand one compressed byte into more than 1032 bytes (a
#: 258-byte match coded in 2 bits); N bytes of deflate data hold at most 1032 * N bytes.
DEFLATE_MAX_RATIO = 1032

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _memory_bytes() -> int | None:
    """Physical memory, or the container's cgroup memory limit when smaller (None: unknown)."""
    total: int | None = None
    try:
        total = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        total = None
    for name in _CGROUP_LIMITS:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            total = int(text) if total is None else min(total, int(text))
        break
    return total if total and total > 0 else None


def default_max_voxels() -> int:
    """The cap without ``MEDSSL_MAX_VOXELS``: the float32 voxels filling a quarter of the
    memory (physical or cgroup limit, whichever is smaller), at most :data:`MAX_VOXELS_CEILING`.
    """
    memory = _memory_bytes()
    if memory is None:
        return MAX_VOXELS_CEILING
    return max(1, min(MAX_VOXELS_CEILING, memory // 16))


def max_voxels() -> int:
    """The largest number of voxels medssl reads into one image.

    ``MEDSSL_MAX_VOXELS`` when set (a whole number such as ``3000000000``, ``3_000_000_000``
    or ``3e9``), otherwise :func:`default_max_voxels`.

    Raises:
        InputError: ``MEDSSL_MAX_VOXELS`` is set but not a positive whole number.
    """
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not text:
        return default_max_voxels()
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise InputError(
            f"the environment variable {MAX_VOXELS_ENV}={text[:40]!r} is not a positive whole "
            "number of voxels",
            hint=f"set e.g. {MAX_VOXELS_ENV}=3000000000, or unset it for the default "
            f"({default_max_voxels():,} voxels on this machine)",
        )
    return int(value)


def _bytes_text(n: int, *, exact: bool = True) -> str:
    """``"4.0 PiB (4,503,599,627,370,496 bytes)"`` (``"4.0 PiB"`` unless ``exact``); plain
    bytes below 1 KiB."""
    if n < 1024:
        return f"{n:,} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"):
        value /= 1024
        if value < 1024 or unit == "YiB":
            break
    return f"{value:.1f} {unit}" + (f" ({n:,} bytes)" if exact else "")


def check_image_size(
    shape: Sequence[int],
    itemsize: int | None,
    *,
    path: str | PathLike[str],
    axes: str | None = None,
    file_bytes: int | None = None,
    available_bytes: int | None = None,
    available_text: str | None = None,
) -> int:
    """Check what a header claims before anything is allocated for it.

    Args:
        shape: The claimed size per axis, in the header's own order.
        itemsize: Bytes per voxel as stored (all channels), before any decompression;
            ``None`` to check the voxel count only.
        path: The file, for the message.
        axes: Names of the axes for the message, e.g. ``"columns x rows x frames"``.
        file_bytes: Size of the file(s) holding the data, for the message.
        available_bytes: The most bytes of image data the file can hold (its data length for
            raw data, an upper bound for compressed data); ``None`` when no bound is known.
        available_text: How ``available_bytes`` was found, for the message (default: "the file
            holds only N of image data").

    Returns:
        The number of voxels claimed.

    Raises:
        InputError: The claim does not fit in the file or is above :func:`max_voxels`.
    """
    dims = [int(d) for d in shape]
    voxels = math.prod(dims)
    cap = max_voxels()
    claim = " x ".join(str(d) for d in dims) + (f" ({axes})" if axes else "")
    claim += f" = {voxels:,} voxels" if len(dims) > 1 else " voxels"
    needed = None
    if itemsize is not None:
        needed = voxels * max(int(itemsize), 0)
        claim += f" of {itemsize} byte(s), {_bytes_text(needed)} of image data"
    in_file = "" if file_bytes is None else f"; the file holds {_bytes_text(file_bytes)}"
    if needed is not None and available_bytes is not None and needed > available_bytes:
        holds = available_text or (
            f"the file holds only {_bytes_text(max(available_bytes, 0))} of image data"
            + ("" if file_bytes is None else f" ({file_bytes:,} bytes in all)")
        )
        also = f"; the claim is also above the limit of {cap:,} voxels" if voxels > cap else ""
        raise InputError(
            f"the header claims {claim}, but {holds}{also}. The header does not describe this "
            "file (truncated, corrupt or hostile); nothing was allocated for it",
            path=path,
            hint="check that the file was copied completely and is the image you meant",
        )
    if voxels > cap:
        source = (
            f"set by {MAX_VOXELS_ENV}"
            if os.environ.get(MAX_VOXELS_ENV, "").strip()
            else "the default: a quarter of this machine's memory as float32, at most 2**31"
        )
        raise InputError(
            f"the header claims {claim}, more than medssl's limit of {cap:,} voxels "
            f"({source}){in_file}. Nothing was allocated for it",
            path=path,
            hint="if the image is genuine and this machine has the memory (about "
            f"{_bytes_text(voxels * 4, exact=False)} as float32, plus working copies), raise "
            f"the limit with the environment variable {MAX_VOXELS_ENV}={voxels}; otherwise the "
            "header is corrupt or hostile",
        )
    return voxels
