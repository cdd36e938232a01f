"""Reading PyTorch files without running code from them.

A ``.pt``/``.pth`` file is a pickle, and unpickling can call any function the file names: a
hostile checkpoint runs its payload the moment it is loaded. medssl reads every PyTorch file
with :func:`load_tensors_file`, which loads tensors and plain values only (``torch.load`` with
``weights_only=True``): dicts, lists, tuples, strings, numbers, ``None``, tensors, dtypes and
devices. A file that names anything else is refused, and nothing it names is called.

nnU-Net's own training checkpoints store their loss curves as NumPy scalars; with
``numpy_scalars=True`` those are read as Python numbers by :func:`_numpy_scalar`, a stand-in
that decodes the raw bytes of a plain numeric type and calls nothing of NumPy.
"""

from __future__ import annotations

import re
import struct
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

from medssl.errors import InputError

__all__ = ["REFUSED_MESSAGE", "load_tensors_file"]

REFUSED_MESSAGE = (
    "refused: the file holds Python objects other than tensors and plain values "
    "(reading it could run code), so medssl does not open it"
)
_DEFAULT_HINT = (
    "use a file written by this version of medssl; a file you made yourself with an older "
    "version or another program, and trust, can be re-saved with torch.save holding tensors "
    "and plain values only"
)
# What torch's weights-only unpickler says when a file names something outside its allow-list
# (a global, a call, an object to build, a TorchScript archive); other errors mean a damaged
# or foreign file. Our own stand-ins for NumPy scalars raise with _NOT_PLAIN in the message.
_NOT_PLAIN = "medssl: not a plain number"
_REFUSAL_PATTERNS = (
    "GLOBAL",
    "Trying to call reduce",
    "Can only create new object",
    "Can only build",
    "must be imported to load",
    "TorchScript",
    _NOT_PLAIN,
)
# struct codes of the NumPy scalar types a training log may hold
_STRUCT_CODES = {
    "f2": "e",
    "f4": "f",
    "f8": "d",
    "i1": "b",
    "i2": "h",
    "i4": "i",
    "i8": "q",
    "u1": "B",
    "u2": "H",
    "u4": "I",
    "u8": "Q",
    "b1": "?",
}


class _NumpyDtype:
    """Stands in for ``numpy.dtype`` while a file is read: a plain numeric type, nothing else.

    A pickled NumPy scalar is ``scalar(dtype(code, False, True), raw_bytes)`` with the dtype's
    state (version, byte order, then ``None`` for sub-arrays, names and fields) set by BUILD.
    """

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if not isinstance(code, str) or code not in _STRUCT_CODES:
            raise _unpickling_error(f"{_NOT_PLAIN}: dtype {str(code)[:20]!r}")
        self.code = code
        self.order = "="

    def __setstate__(self, state: object) -> None:
        if (
            not isinstance(state, tuple)
            or len(state) < 5
            or state[1] not in ("<", ">", "|", "=")
            or any(part is not None for part in state[2:5])
        ):
            raise _unpickling_error(f"{_NOT_PLAIN}: a structured or sub-array dtype")
        self.order = "<" if state[1] == "|" else state[1]


def _numpy_scalar(dtype: object, data: object = None) -> int | float | bool:
    """Stands in for ``numpy.core.multiarray.scalar``: the Python number of ``data``."""
    code = getattr(dtype, "code", None)
    if not isinstance(dtype, _NumpyDtype) or code not in _STRUCT_CODES:
        raise _unpickling_error(f"{_NOT_PLAIN}: a NumPy scalar of another kind")
    if not isinstance(data, bytes):
        raise _unpickling_error(f"{_NOT_PLAIN}: no raw bytes for a {code}")
    fmt = getattr(dtype, "order", "=") + _STRUCT_CODES[code]
    if len(data) != struct.calcsize(fmt):
        raise _unpickling_error(f"{_NOT_PLAIN}: {len(data)} bytes for a {code}")
    return struct.unpack(fmt, data)[0]


def _unpickling_error(message: str) -> Exception:
    import pickle

    return pickle.UnpicklingError(message)


def _numpy_scalar_globals() -> list[Any]:
    return [
        (_numpy_scalar, "numpy._core.multiarray.scalar"),  # written by NumPy 2
        (_numpy_scalar, "numpy.core.multiarray.scalar"),  # written by NumPy 1
        (_NumpyDtype, "numpy.dtype"),
    ]


def _named_global(message: str) -> str:
    """The name of the first global the refused file asks for, reduced to a safe spelling."""
    found = re.search(r"GLOBAL (\S+)", message)
    if found is None:
        return ""
    name = re.sub(r"[^A-Za-z0-9_.]", "", found.group(1))[:80]
    return f" (it asks for {name})" if name else ""


def load_tensors_file(
    path: str | PathLike[str],
    *,
    numpy_scalars: bool = False,
    hint: str | None = None,
) -> dict[str, Any]:
    """Read a PyTorch file that must hold only tensors and plain values, on the CPU.

    Args:
        path: A ``.pt``/``.pth`` file (``torch.save``'s zip format, or the legacy one).
        numpy_scalars: Also accept NumPy scalars of plain numeric types (nnU-Net's training
            checkpoints hold them); they are read as Python numbers.
        hint: What the user can do when the file is refused (a default when omitted).

    Returns:
        The dictionary stored in the file.

    Raises:
        InputError: The file is missing, is refused because it holds other Python objects
            (nothing in it is run), is not a readable PyTorch file, or holds no dictionary.
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise InputError("no such file", path=file)
    allowed = _numpy_scalar_globals() if numpy_scalars else []
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            # torch warns before it refuses a TorchScript archive; the refusal says enough
            warnings.filterwarnings("ignore", message=".*TorchScript archive")
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        message = str(exc)
        if any(p in message for p in _REFUSAL_PATTERNS):
            raise InputError(
                REFUSED_MESSAGE + _named_global(message), path=file, hint=hint or _DEFAULT_HINT
            ) from None
        raise InputError(
            f"not a readable PyTorch checkpoint ({type(exc).__name__}): damaged, cut short "
            "or another kind of file",
            path=file,
        ) from None
    if not isinstance(obj, dict):
        raise InputError(
            f"holds a {type(obj).__name__}, not the dictionary of a medssl file", path=file
        )
    return obj
