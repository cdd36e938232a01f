"""The one writer (``medssl.io.atomic``): verified writes that leave nothing under the final
name on failure, groups of outputs that appear together, ownership markers, stale temporary
entries, modes that follow the umask, and links out of an input folder."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from medssl.io import (
    OWNER_MARKER,
    InputError,
    OutputError,
    Volume,
    atomic_dir,
    atomic_file,
    check_not_input,
    check_writable,
    claim_folder,
    clean_stale_temps,
    list_files,
    output_group,
    remove_owned,
    write_text,
    write_volume,
)


def _ct(shape=(4, 64, 64), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(0, 100, shape).astype(np.float32), spacing=(1, 1, 1), modality="CT")


@contextlib.contextmanager
def _mount(path: Path, options: str):
    """A tmpfs mounted at ``path`` (root only; skipped with the reason elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def full_disk(tmp_path):
    with _mount(tmp_path / "full", "size=256k") as p:
        yield p


@pytest.fixture
def read_only(tmp_path):
    with _mount(tmp_path / "ro", "ro,size=64k") as p:
        yield p


def left_by_a_killed_run(folder: Path, name: str) -> Path:
    """The temporary folder a killed medssl process (this host, a PID now gone) left for the
    output ``name`` in ``folder`` (created, empty)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname().replace(".", "-")[:32]
    path = folder / f".{name}.medssl-tmp.{host}.{dead.pid}.{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii", "a.nrrd", "a.mha", "series"])
def test_a_full_disk_leaves_nothing_under_the_final_name(full_disk, name):
    # ITK reports no error on a short NIfTI write: only the read-back finds it
    with pytest.raises(OutputError) as info:
        write_volume(_ct((8, 128, 128)), full_disk / name)
    assert name in str(info.value) and "nothing was written" in str(info.value)
    assert _visible(full_disk) == []  # neither the file nor a temporary one


def test_a_read_only_location_is_found_by_the_probe(read_only):
    with pytest.raises(InputError) as info:
        check_writable(read_only / "out.nii.gz")
    assert "read-only" in str(info.value).lower() and str(read_only) in str(info.value)


def test_a_failed_check_leaves_nothing(tmp_path):
    def bad(_: Path) -> None:
        raise OutputError("did not read back", path=_)

    with pytest.raises(OutputError) as info, atomic_file(tmp_path / "x.txt", verify=bad) as tmp:
        tmp.write_text("data")
    assert str(tmp_path / "x.txt") in str(info.value)  # the final name, not the temporary one
    assert _visible(tmp_path) == []
    with pytest.raises(OutputError), atomic_file(tmp_path / "empty.bin") as tmp:
        tmp.write_bytes(b"")  # a 0-byte file is never put in place
    assert _visible(tmp_path) == []


def _write_two_then_fail(folder: Path) -> None:
    with output_group():
        write_text(folder / "a.txt", "a")
        with atomic_dir(folder / "maps") as d:
            (d / "m.txt").write_text("m")
        assert "a.txt" not in _visible(folder)  # nothing in place yet
        raise RuntimeError("the model write failed")


def _write_to_two_disks(ok: Path, full: Path) -> None:
    with output_group():
        write_volume(_ct(), ok / "image.nii.gz")
        write_volume(_ct((8, 128, 128)), full / "maps.nii.gz")


def test_a_group_appears_together_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        _write_two_then_fail(tmp_path)
    assert _visible(tmp_path) == []
    with output_group():
        write_text(tmp_path / "a.txt", "a")
        with atomic_dir(tmp_path / "maps") as d:
            (d / "m.txt").write_text("m")
    assert _visible(tmp_path) == ["a.txt", "maps"]


def test_a_group_with_an_output_on_a_full_disk_leaves_the_others_out(tmp_path, full_disk):
    with pytest.raises(OutputError):
        _write_to_two_disks(tmp_path, full_disk)
    assert _visible(tmp_path) == ["full"] and _visible(full_disk) == []


def test_only_folders_medssl_made_are_replaced_or_removed(tmp_path):
    mine = tmp_path / "user"
    mine.mkdir()
    (mine / "thesis.docx").write_text("years of work")
    with pytest.raises(InputError, match="did not make"):
        claim_folder(mine, "batch")
    with pytest.raises(InputError, match="did not make"):
        remove_owned(mine)
    with pytest.raises(InputError, match="did not make"), atomic_dir(mine, overwrite=True) as d:
        (d / "x").write_text("x")
    assert (mine / "thesis.docx").read_text() == "years of work"
    ours = claim_folder(tmp_path / "ours", "batch")
    assert (ours / OWNER_MARKER).is_file()
    claim_folder(ours, "batch")  # reused
    (ours / "x").write_text("x")
    remove_owned(ours)
    assert not ours.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (claim_folder(empty, "pipeline") / OWNER_MARKER).is_file()


def test_outputs_overlapping_inputs_are_refused_with_both_paths(tmp_path):
    inp = tmp_path / "in"
    (inp / "a").mkdir(parents=True)
    for out, src in ((inp / "a" / "out", inp), (tmp_path, inp), (inp, inp)):
        with pytest.raises(InputError) as info:
            check_not_input(out, [src])
        assert str(out) in str(info.value) and str(src) in str(info.value)
    link = tmp_path / "link"
    link.symlink_to(inp)
    with pytest.raises(InputError):
        check_not_input(link / "out", [inp])  # through a link
    check_not_input(tmp_path / "elsewhere", [inp])


def test_stale_temporary_entries_of_dead_processes_are_removed(tmp_path):
    stale = left_by_a_killed_run(tmp_path, "job")
    host = socket.gethostname().replace(".", "-")[:32]
    (stale / "patient.dcm").write_bytes(b"x")
    alive = tmp_path / f".job2.medssl-tmp.{host}.{os.getpid()}.abcd1234"
    alive.mkdir()
    user = tmp_path / ".hidden-user-file"
    user.write_text("mine")
    removed = clean_stale_temps(tmp_path)
    assert removed == [stale] and not stale.exists()
    assert alive.exists() and user.exists()


def test_written_folders_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_volume(_ct((2, 16, 16)), tmp_path / "series")
        with atomic_dir(tmp_path / "plain") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "series").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o750


def test_file_links_out_of_the_folder_are_not_followed(tmp_path):
    inside = tmp_path / "in"
    inside.mkdir()
    (inside / "a.nii.gz").write_bytes(b"x")
    secret = tmp_path / "elsewhere.nii.gz"
    secret.write_bytes(b"x")
    (inside / "out.nii.gz").symlink_to(secret)
    (inside / "in.nii.gz").symlink_to(inside / "a.nii.gz")
    names = [p.name for p in list_files(inside)]
    assert names == ["a.nii.gz", "in.nii.gz"]
    assert "out.nii.gz" in [p.name for p in list_files(inside, follow_outside_links=True)]


def test_overwrite_replaces_a_derived_series_medssl_wrote_but_no_other_folder(tmp_path):
    arr = np.full((2, 16, 16), -1000.0, np.float32)
    arr[:, 4:12, 4:12] = 40.0
    ct = Volume(arr, spacing=(1, 1, 1), modality="CT")
    write_volume(ct, tmp_path / "series")
    write_volume(ct.with_array(arr + 1), tmp_path / "series", overwrite=True)
    user = tmp_path / "user"
    user.mkdir()
    (user / "report.pdf").write_bytes(b"%PDF")
    with pytest.raises(InputError, match="did not make"):
        write_volume(ct, user, overwrite=True)
    assert _visible(user) == ["report.pdf"]


def test_a_write_removes_what_a_killed_write_of_the_same_output_left(tmp_path):
    left = left_by_a_killed_run(tmp_path, "series")
    (left / "00001.dcm").write_bytes(b"patient data")
    other = left_by_a_killed_run(tmp_path, "other")
    with atomic_dir(tmp_path / "series") as d:
        (d / "f").write_text("x")
    assert not left.exists() and other.exists()  # only the same output's leftovers
