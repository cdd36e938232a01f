"""The one writer: every file and folder medssl writes goes through this module.

A write goes to a temporary name next to its target (``.<name>.medssl-tmp.<host>.<pid>.<id>``),
is flushed to disk (``fsync``), verified (not empty; the caller's check, e.g. an image's
header read back), and only then renamed to its final name. A failure (a full disk, an I/O
error, a failed check) raises :class:`~medssl.errors.OutputError` naming the path and
leaves nothing under the final name.

Several outputs of one command (an image, its sigma maps, a saved model) are made to appear
together with :func:`output_group`: inside it, :func:`atomic_file` and :func:`atomic_dir` only
stage their outputs; all are renamed into place when the group closes without error, and all
are removed when it fails.

Ownership: medssl removes or replaces only what it made. Folders it creates for pipelines and
batches carry a marker file (:data:`OWNER_MARKER`, see :func:`claim_folder`); an existing
non-empty folder without it is refused, never emptied. An output may not be, contain or lie
inside an input (:func:`check_not_input`).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medssl.errors import InputError, OutputError

__all__ = [
    "OWNER_MARKER",
    "atomic_dir",
    "atomic_file",
    "check_not_input",
    "check_writable",
    "claim_folder",
    "clean_stale_temps",
    "is_owned",
    "output_group",
    "prepare_output",
    "remove_owned",
    "write_json",
    "write_text",
]

#: The file that marks a folder as made by medssl (JSON: what made it, when).
OWNER_MARKER = ".medssl-owned"
_TMP_TAG = ".medssl-tmp."
_OLD_TAG = ".medssl-old."
#: A temporary entry of another machine is stale after this long (shared file systems).
STALE_AFTER_S = 24 * 3600.0

Verify = Callable[[Path], None]


# ---- paths ---------------------------------------------------------------------------------


def _resolve(p: Path) -> Path:
    return Path(os.path.realpath(p.expanduser()))


def _same_or_inside(a: Path, b: Path) -> bool:
    a, b = _resolve(a), _resolve(b)
    return a == b or b in a.parents or a in b.parents


def check_not_input(
    output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> None:
    """Refuse an output that is, contains or lies inside one of the inputs (and the reverse).

    Paths are compared after resolving symbolic links.

    Raises:
        InputError: Naming both paths.
    """
    out = Path(output)
    for inp in inputs:
        if _same_or_inside(out, Path(inp)):
            raise InputError(
                f"the output and the input {inp} overlap (one is, contains or lies inside the "
                "other): medssl never writes inside its inputs",
                path=out,
                hint="choose an output folder outside the input, and an input outside the output",
            )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_name(name: str) -> str:
    host = socket.gethostname().replace(".", "-")[:32] or "host"
    return f".{name}{_TMP_TAG}{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _os_error(exc: OSError, path: Path, doing: str) -> OutputError:
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    hint = {
        errno.ENOSPC: "free space on that disk or write elsewhere",
        errno.EDQUOT: "free space within your quota or write elsewhere",
        errno.EROFS: "the file system is read-only: write elsewhere",
        errno.EACCES: "choose a folder you may write to",
        errno.EPERM: "choose a folder you may write to",
    }.get(exc.errno or 0, "check the disk and the folder's permissions")
    return OutputError(f"cannot {doing}: {reason}; nothing was written", path=path, hint=hint)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Check, before any long work, that files can be created where ``path`` will go.

    Creates the missing parent folders of ``path`` and a probe file beside it (removed at
    once), so that read-only file systems and folders without write permission are found
    even when running as root.

    Raises:
        InputError: The location cannot be written (exit code 2 at the CLI), with the path.
    """
    target = Path(path)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder")
        probe = parent / _tmp_name("probe")
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        raise InputError(
            f"the output cannot be written there ({reason})",
            path=target,
            hint="choose an output location on a writable disk, in a folder you may write to",
        ) from None
    return target


def prepare_output(output: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Check that ``output`` may be written: it does not exist unless ``overwrite``, and its
    folder is writable (see :func:`check_writable`)."""
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(
            "the output already exists", path=out, hint="pass --overwrite or choose another path"
        )
    return check_writable(out)


# ---- ownership -----------------------------------------------------------------------------


def claim_folder(folder: str | os.PathLike[str], kind: str) -> Path:
    """Make ``folder`` medssl's: create it with a marker, or accept it when it is empty or
    already marked.

    Args:
        folder: The output folder of a pipeline, a pipeline stage or a batch.
        kind: What it holds (``"pipeline"``, ``"batch"``, ``"stage:denoise"``, ...).

    Raises:
        InputError: The folder exists, is not empty and has no marker (medssl did not make it
            and will not write into it), or is a file.
    """
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise InputError("the output must be a folder, but a file is there", path=root)
    if root.is_dir() and not is_owned(root):
        entries = [p.name for p in root.iterdir()]
        if entries:
            raise InputError(
                f"the output folder exists and holds {len(entries)} entries that medssl did not "
                f"make (no {OWNER_MARKER} marker); medssl writes only into new or empty folders "
                "or folders it made",
                path=root,
                hint="choose a new or empty output folder",
            )
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / OWNER_MARKER).is_file():
            record = {"made_by": "medssl", "kind": kind, "created": time.strftime("%Y-%m-%d")}
            write_text(root / OWNER_MARKER, json.dumps(record) + "\n")
    except OSError as exc:
        raise InputError(
            f"cannot create the output folder ({os.strerror(exc.errno or 0)})",
            path=root,
            hint="choose a folder you may write to",
        ) from None
    return root


def is_owned(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` carries medssl's marker (it made the folder)."""
    p = Path(folder)
    return p.is_dir() and not p.is_symlink() and (p / OWNER_MARKER).is_file()


def remove_owned(folder: str | os.PathLike[str]) -> None:
    """Delete a folder medssl made (marked); refuse anything else.

    Raises:
        InputError: The folder has no marker, or is a symbolic link.
    """
    p = Path(folder)
    if not p.exists() and not p.is_symlink():
        return
    if not is_owned(p):
        raise InputError(
            f"medssl did not make this folder (no {OWNER_MARKER} marker) and will not delete it",
            path=p,
            hint="move it away or choose another output folder",
        )
    shutil.rmtree(p)


def clean_stale_temps(folder: str | os.PathLike[str], *, name: str | None = None) -> list[Path]:
    """Remove medssl's temporary entries in ``folder`` left by killed runs (only those of the
    output ``name`` when given).

    An entry is stale when the process that made it (same host) is gone, or when it was made
    on another host more than :data:`STALE_AFTER_S` ago. Returns the removed paths.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    host = socket.gethostname().replace(".", "-")[:32] or "host"
    removed = []
    for p in root.iterdir():
        tag = _TMP_TAG if _TMP_TAG in p.name else _OLD_TAG if _OLD_TAG in p.name else None
        if not p.name.startswith(".") or tag is None:
            continue
        if name is not None and not p.name.startswith(f".{name}{tag}"):
            continue
        parts = p.name.split(tag, 1)[1].split(".")
        if len(parts) < 3:
            continue
        their_host, pid = parts[0], parts[1]
        if their_host == host:
            stale = not pid.isdigit() or not _alive(int(pid))
        else:
            stale = time.time() - p.lstat().st_mtime > STALE_AFTER_S
        if stale:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- durable, verified writes --------------------------------------------------------------


def _fsync(path: Path) -> None:
    """Flush a file, or every file of a folder and the folder itself, to disk."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.is_symlink():
                _fsync_one(p, directory=False)
        _fsync_one(path, directory=True)
    else:
        _fsync_one(path, directory=False)


def _fsync_one(path: Path, *, directory: bool) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync folders
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _check_nonempty(path: Path, *, empty_files: bool = False) -> None:
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        if not files:
            raise OutputError("the written folder is empty; nothing was written", path=path)
        empty = [
            p for p in files if not empty_files and p.stat().st_size == 0 and p.name != OWNER_MARKER
        ]
    else:
        empty = [path] if path.stat().st_size == 0 else []
    if empty:
        raise OutputError(
            f"{empty[0].name} was written empty (0 bytes; disk full?); nothing was written",
            path=path,
            hint="free space on that disk or write elsewhere",
        )


@dataclass
class _Staged:
    tmp: Path  # the temporary entry holding the output
    target: Path
    overwrite: bool
    owned: Callable[[Path], bool] | None
    holder: Path | None = None  # the temporary folder to remove afterwards (files)
    companions: list[Path] = field(default_factory=list)  # files moved beside the target


@dataclass
class _Group:
    staged: list[_Staged] = field(default_factory=list)


_GROUP: contextvars.ContextVar[_Group | None] = contextvars.ContextVar("medssl_group", default=None)


def _check_replaceable(item: _Staged) -> None:
    target = item.target
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        return  # an empty folder: nothing in it to lose
    if not item.overwrite:
        raise InputError(
            "the output already exists", path=target, hint="pass --overwrite or choose another path"
        )
    if target.is_dir() and not target.is_symlink():
        owned = item.owned or is_owned
        if not owned(target):
            raise InputError(
                "medssl did not make this folder and will not replace it",
                path=target,
                hint="choose another output path, or move the folder away",
            )


def _commit(items: list[_Staged]) -> None:
    """Rename every staged entry into place; on a failure, undo the renames done so far."""
    for item in items:
        _check_replaceable(item)
    mode_dir = 0o777 & ~_umask()
    done: list[tuple[_Staged, Path | None]] = []
    try:
        for item in items:
            old: Path | None = None
            if item.target.exists() or item.target.is_symlink():
                old = item.target.with_name(_tmp_name(item.target.name).replace(_TMP_TAG, _OLD_TAG))
                os.replace(item.target, old)
            if item.tmp.is_dir():
                os.chmod(item.tmp, mode_dir)
            os.replace(item.tmp, item.target)
            done.append((item, old))
        for item in items:
            _fsync_one(item.target.parent, directory=True)
    except OSError as exc:
        for item, old in reversed(done):
            with contextlib.suppress(OSError):
                _discard(item.target)
                if old is not None:
                    os.replace(old, item.target)
        raise _os_error(exc, items[0].target, "put the outputs in place") from None
    for _, old in done:
        if old is not None:
            _discard(old)


def _discard(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _finish(item: _Staged) -> None:
    """Commit one staged output now, or leave it to the open group."""
    group = _GROUP.get()
    if group is not None:
        _check_replaceable(item)  # fail early, before the group's other outputs
        group.staged.append(item)
        return
    try:
        _commit([item])
    finally:
        _cleanup(item)


def _cleanup(item: _Staged) -> None:
    if item.tmp.exists() or item.tmp.is_symlink():
        _discard(item.tmp)
    for c in item.companions:
        _discard(c)
    if item.holder is not None:
        _discard(item.holder)


@contextlib.contextmanager
def output_group() -> Iterator[None]:
    """The outputs written inside appear together when the block ends, or not at all.

    Example::

        with output_group():
            write_volume(result, "out.nii.gz")
            save_sigma_maps(maps, volume, "maps/")
        # both are in place here; after an exception neither is
    """
    if _GROUP.get() is not None:  # nested: the outer group commits
        yield
        return
    group = _Group()
    token = _GROUP.set(group)
    try:
        yield
    except BaseException:
        _GROUP.reset(token)
        for item in group.staged:
            _cleanup(item)
        raise
    _GROUP.reset(token)
    try:
        _commit(group.staged)
    finally:
        for item in group.staged:
            _cleanup(item)


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike[str], *, overwrite: bool = True, verify: Verify | None = None
) -> Iterator[Path]:
    """Yield a temporary path ``<tmp folder>/<name of target>`` to write the file to.

    On success the file is synced, checked (not empty, then ``verify(path)``) and renamed to
    ``target``; companion files written beside it (an MHD's raw data) move into the target's
    folder too. Inside :func:`output_group` the rename waits for the group.

    Raises:
        OutputError: The write or the check failed (disk full, I/O error); nothing is left
            under ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(target.parent, name=target.name)  # left by a killed earlier run
        holder = target.parent / _tmp_name(target.name)
        holder.mkdir()
    except OSError as exc:
        raise _os_error(exc, target, "create the output") from None
    tmp = holder / target.name
    item = _Staged(tmp=tmp, target=target, overwrite=overwrite, owned=None, holder=holder)
    try:
        try:
            yield tmp
        except OSError as exc:
            raise _os_error(exc, target, "write the output") from None
        if not tmp.is_file():
            raise OutputError("nothing was written", path=target)
        try:
            _fsync(holder)
            _check_nonempty(tmp)
            if verify is not None:
                verify(tmp)
        except OutputError as exc:  # name the final path, not the temporary one
            raise OutputError(exc.message, path=target, hint=exc.hint) from None
        except OSError as exc:
            raise _os_error(exc, target, "write the output") from None
        for c in sorted(p for p in holder.iterdir() if p.name != target.name):
            # companions (an MHD's raw data) go beside the target, before it
            _finish(_Staged(tmp=c, target=target.parent / c.name, overwrite=overwrite, owned=None))
        _finish(item)
    except BaseException:
        _cleanup(item)
        raise


@contextlib.contextmanager
def atomic_dir(
    target: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    verify: Verify | None = None,
    owned: Callable[[Path], bool] | None = None,
    empty_files: bool = False,
) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success it replaces ``target``.

    The folder's files are synced and checked (none empty unless ``empty_files``, e.g. a copy
    of an archive's members; then ``verify(folder)``) before the rename; the folder's mode
    follows the umask. An existing ``target`` is replaced only with ``overwrite`` and only
    when medssl made it (``owned(target)``, by default its :data:`OWNER_MARKER`); the old
    folder is deleted after the new one is in place.

    Raises:
        InputError: ``target`` exists and may not be replaced.
        OutputError: The write or the check failed; nothing is left under ``target``.
    """
    target = Path(target)
    item = _Staged(tmp=Path(), target=target, overwrite=overwrite, owned=owned)
    _check_replaceable(item)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(target.parent, name=target.name)  # left by a killed earlier run
        tmp = target.parent / _tmp_name(target.name)
        tmp.mkdir()
    except OSError as exc:
        raise _os_error(exc, target, "create the output folder") from None
    item.tmp = tmp
    try:
        try:
            # writes into the temporary folder need no group: the folder is the unit
            token = _GROUP.set(None)
            try:
                yield tmp
            finally:
                _GROUP.reset(token)
            _fsync(tmp)
            _check_nonempty(tmp, empty_files=empty_files)
            if verify is not None:
                verify(tmp)
        except OutputError as exc:
            raise OutputError(exc.message, path=target, hint=exc.hint) from None
        except OSError as exc:
            raise _os_error(exc, target, "write the output folder") from None
        _finish(item)
    except BaseException:
        _cleanup(item)
        raise


def write_text(target: str | os.PathLike[str], text: str, *, verify: Verify | None = None) -> Path:
    """Write a small text file through :func:`atomic_file` (replacing an existing one)."""
    target = Path(target)
    with atomic_file(target, verify=verify) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def _json_readable(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputError(
            f"the JSON file did not read back ({type(exc).__name__})", path=path
        ) from None


def write_json(target: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, checked by reading it back."""
    return write_text(target, json.dumps(obj, indent=2) + "\n", verify=_json_readable)
