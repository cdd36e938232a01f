"""Atomic outputs: write under a temporary name next to the target, then rename.

A crash or an error leaves either the old target or nothing, never a half-written file or
folder. Targets that are inputs of the same run are refused by :func:`check_not_input`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from medssl.io.errors import InputError

__all__ = ["atomic_dir", "atomic_file", "check_not_input", "prepare_output"]


def _same_or_inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents or a in b.parents


def check_not_input(
    output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> None:
    """Refuse an output path that is, contains or lies inside one of the inputs."""
    out = Path(output)
    for inp in inputs:
        if _same_or_inside(out, Path(inp)):
            raise InputError(
                "the output would overwrite or write inside the input",
                path=out,
                hint="choose an output path outside the input file or folder",
            )


def prepare_output(output: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Check that ``output`` may be written: its parent exists or can be made, and it does
    not exist unless ``overwrite``."""
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(
            "the output already exists", path=out, hint="pass --overwrite or choose another path"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder path ``tmp/<name of target>`` to write into; on success the
    file written there (and any companion files, e.g. an MHD's raw data) is renamed into the
    target's folder. Companions are moved first, the named file last.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        tmp_target = tmpdir / target.name
        yield tmp_target
        if not tmp_target.exists():
            raise RuntimeError(f"nothing was written to {tmp_target}")
        for item in sorted(tmpdir.iterdir()):
            if item.name != target.name:
                os.replace(item, target.parent / item.name)
        os.replace(tmp_target, target)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success it replaces ``target``.

    With ``overwrite`` an existing target is moved aside first and deleted only after the
    new folder is in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old: Path | None = None
        if target.exists():
            if not overwrite:
                raise InputError(
                    "the output already exists",
                    path=target,
                    hint="pass --overwrite or choose another path",
                )
            old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
