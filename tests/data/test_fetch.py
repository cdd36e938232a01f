"""The sample-data fetcher: verification, extraction, offline seeding and clear failures.

These tests build small archives locally (a wheel, an sdist, a Debian package) so that they
run without a network; the real samples are exercised by every test that uses them.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from medssl.data import (
    ARCHIVES,
    SAMPLES,
    Archive,
    DataUnavailableError,
    Sample,
    fetch,
    fetch_archive,
)
from medssl.data.fetch import cache_root
from medssl.io import InputError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tar_gz(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _wheel(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _deb(files: dict[str, bytes]) -> bytes:
    data_tar = _tar_gz({f"./{k}": v for k, v in files.items()}, mode="w:xz")
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, body in (
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", b""),
        ("data.tar.xz", data_tar),
    ):
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n"
        out.write(header.encode())
        out.write(body)
        if len(body) % 2:
            out.write(b"\n")
    return out.getvalue()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cache, a seeded-archive folder and no reachable registry."""
    monkeypatch.setenv("MEDSSL_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDSSL_DATA_ARCHIVES", str(tmp_path / "seed"))
    monkeypatch.setenv("MEDSSL_PYPI_INDEX", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("MEDSSL_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    (tmp_path / "seed").mkdir()
    return tmp_path


def _register(monkeypatch, key, archive, sample):
    monkeypatch.setitem(ARCHIVES, key, archive)
    monkeypatch.setitem(SAMPLES, sample.name, sample)


@pytest.mark.parametrize("kind", ["sdist", "wheel", "deb"])
def test_seeded_archive_is_verified_and_extracted(isolated, monkeypatch, kind):
    files = {"pkg-1.0/data/img.nrrd": b"NRRD0004 fake", "pkg-1.0/data/other.txt": b"x"}
    if kind == "sdist":
        blob, filename, registry = _tar_gz(files), "pkg-1.0.tar.gz", "pypi"
    elif kind == "wheel":
        blob, filename, registry = _wheel(files), "pkg-1.0-py3-none-any.whl", "pypi"
    else:
        blob, filename, registry = _deb(files), "pkg_1.0_all.deb", "debian"
    (isolated / "seed" / filename).write_bytes(blob)
    archive = Archive(registry, "pkg", "1.0", filename, _sha(blob), pool_path="pool/p/pkg.deb")
    sample = Sample("t", "test", ("*/data/img.nrrd",), "img.nrrd", "test", "none")
    _register(monkeypatch, "test", archive, sample)
    path = fetch("t")
    assert path.name == "img.nrrd" and path.read_bytes() == b"NRRD0004 fake"
    assert sorted(p.name for p in path.parent.iterdir()) == ["img.nrrd"]
    assert (cache_root() / "archives" / filename).is_file()
    # a second fetch uses the cache, even with the seed gone
    (isolated / "seed" / filename).unlink()
    assert fetch("t") == path


def test_tree_samples_keep_their_layout(isolated, monkeypatch):
    files = {"lib/test_files/a.dcm": b"a", "lib/test_files/sub/b.dcm": b"b", "lib/other.py": b""}
    blob = _wheel(files)
    (isolated / "seed" / "lib-1-py3-none-any.whl").write_bytes(blob)
    archive = Archive("pypi", "lib", "1", "lib-1-py3-none-any.whl", _sha(blob))
    sample = Sample(
        "tree", "test", ("lib/test_files/*",), ".", "t", "none", keep_below="lib/test_files/"
    )
    _register(monkeypatch, "test", archive, sample)
    root = fetch("tree")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "a.dcm",
        "sub/b.dcm",
    ]


def test_an_interrupted_extraction_is_replaced_and_empty_members_kept(isolated, monkeypatch):
    files = {"lib/test_files/a.dcm": b"a", "lib/test_files/empty.dcm": b""}
    blob = _wheel(files)
    (isolated / "seed" / "lib-1-py3-none-any.whl").write_bytes(blob)
    archive = Archive("pypi", "lib", "1", "lib-1-py3-none-any.whl", _sha(blob))
    sample = Sample(
        "tree", "test", ("lib/test_files/*",), ".", "t", "none", keep_below="lib/test_files/"
    )
    _register(monkeypatch, "test", archive, sample)
    partial = cache_root() / "samples" / "tree"  # an earlier fetch killed before its marker
    partial.mkdir(parents=True)
    (partial / "half.dcm").write_bytes(b"h")
    root = fetch("tree")
    assert sorted(p.name for p in root.iterdir()) == ["a.dcm", "empty.dcm"]
    assert (root / "empty.dcm").read_bytes() == b""
    leftovers = [p.name for d in (root.parent, cache_root() / "archives") for p in d.iterdir()]
    assert not [n for n in leftovers if "tmp" in n or n.endswith(".part")], leftovers


def test_checksum_mismatch_is_refused_and_nothing_kept(isolated, monkeypatch):
    blob = _tar_gz({"p/data/img.nrrd": b"tampered"})
    (isolated / "seed" / "p-1.tar.gz").write_bytes(blob)
    archive = Archive("pypi", "p", "1", "p-1.tar.gz", "0" * 64)
    _register(
        monkeypatch, "test", archive, Sample("bad", "test", ("*/img.nrrd",), "img.nrrd", "", "")
    )
    with pytest.raises(DataUnavailableError, match="SHA-256"):
        fetch("bad")
    assert not (cache_root() / "archives" / "p-1.tar.gz").exists()
    assert not (cache_root() / "samples" / "bad").exists()


def test_unreachable_registry_says_what_to_do(isolated, monkeypatch):
    archive = Archive("pypi", "p", "1", "p-1.tar.gz", "0" * 64)
    _register(monkeypatch, "test", archive, Sample("gone", "test", ("*",), "x", "", ""))
    with pytest.raises(DataUnavailableError) as info:
        fetch("gone")
    message = str(info.value)
    assert "p-1.tar.gz" in message and "MEDSSL_DATA_ARCHIVES" in message


def test_unknown_sample_is_an_input_error():
    with pytest.raises(InputError, match="unknown sample"):
        fetch("no-such-sample")


def test_a_tampered_cached_archive_is_never_used(isolated, monkeypatch):
    genuine = _wheel({"lib/data/img.nrrd": b"genuine"})
    filename = "lib-1-py3-none-any.whl"
    (isolated / "seed" / filename).write_bytes(genuine)
    archive = Archive("pypi", "lib", "1", filename, _sha(genuine))
    _register(
        monkeypatch, "test", archive, Sample("t", "test", ("*/img.nrrd",), "img.nrrd", "", "")
    )
    cached = fetch_archive("test")
    assert cached == cache_root() / "archives" / filename and cached.read_bytes() == genuine
    cached.write_bytes(_wheel({"lib/data/img.nrrd": b"tampered"}))  # same name, other bytes
    (isolated / "seed" / filename).unlink()
    with pytest.raises(DataUnavailableError):  # checked again, and no genuine copy is reachable
        fetch_archive("test")
    (isolated / "seed" / filename).write_bytes(genuine)
    assert fetch_archive("test").read_bytes() == genuine  # the tampered copy was replaced
    assert fetch("t").read_bytes() == b"genuine"


def test_docs_list_every_pinned_archive_and_checksum():
    """docs/data.md names each archive medssl fetches with the SHA-256 pinned in the code."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    for key, archive in ARCHIVES.items():
        row = next((line for line in docs.splitlines() if archive.filename in line), None)
        assert row is not None, f"docs/data.md does not name {archive.filename} ({key})"
        assert archive.sha256 in row, f"docs/data.md gives another checksum for {key}"
        assert archive.version in row and archive.package in row
    pinned = set(re.findall(r"\b[0-9a-f]{64}\b", docs))
    assert pinned == {a.sha256 for a in ARCHIVES.values()}, "a checksum the code does not pin"
    for name in SAMPLES:
        assert f"`{name}`" in docs, f"docs/data.md does not describe the sample {name!r}"
