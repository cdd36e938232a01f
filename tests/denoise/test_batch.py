"""``medssl denoise --batch``: one job per series at any nesting, outputs named by UID hashes,
shards that add up to the single run, and a killed run that resumes without redoing work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest

from medssl.denoise.batch import find_jobs, parse_shard, shard_jobs
from medssl.io import InputError, read_volume, write_dicom_series, write_volume
from tests.denoise.phantom import phantom

FAST = ["--steps", "10", "--threads", "1"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three DICOM CT series (nested at different depths) and one NIfTI CT."""
    root = tmp_path_factory.mktemp("studies")
    for i, rel in enumerate(["siteA/patient1/ct", "siteA/patient2/study/ct", "siteB/ct"]):
        vol, _ = phantom((3, 40, 44), seed=i)
        write_dicom_series(vol, root / rel)
    vol, _ = phantom((3, 40, 44), seed=9)
    write_volume(vol, root / "siteB" / "extra.nii.gz")
    (root / "siteB" / "notes.txt").write_text("not an image")
    return root


def _outputs(folder):
    """Per job: the pixel data and the UIDs of every written file."""
    result = {}
    for job in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted((job / "denoised").glob("*.dcm")) if (job / "denoised").is_dir() else []
        if files:
            dss = [pydicom.dcmread(f) for f in files]
            result[job.name] = (
                np.stack([d.pixel_array for d in dss]),
                [(d.SeriesInstanceUID, d.SOPInstanceUID) for d in dss],
            )
        else:
            result[job.name] = (read_volume(job / "denoised.nii.gz").array, [])
    return result


def test_jobs_are_found_at_any_nesting_in_a_stable_order(studies):
    jobs = find_jobs(studies)
    assert len(jobs) == 4 and [j.key for j in jobs] == sorted(j.key for j in jobs)
    assert sum(j.series is not None for j in jobs) == 3
    assert all(len(j.key) == 16 and int(j.key, 16) >= 0 for j in jobs)
    parts = [shard_jobs(jobs, (i, 3)) for i in range(3)]
    assert sorted(j.key for p in parts for j in p) == [j.key for j in jobs]
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(InputError):
            parse_shard(bad)


def test_shards_together_write_what_one_run_writes(medssl, studies, tmp_path):
    single = tmp_path / "single"
    r = medssl("denoise", "--batch", studies, "-o", single, *FAST)
    assert r.code == 0, r.stderr
    assert "4 series" in r.stdout
    sharded = tmp_path / "sharded"
    finished = []  # per shard run: the series done so far and when their record was written
    for i in range(2):
        r = medssl("denoise", "--batch", studies, "-o", sharded, "--shard", f"{i}/2", *FAST)
        assert r.code == 0, r.stderr
        finished.append({p.parent.name: p.stat().st_mtime_ns for p in sharded.glob("*/job.json")})
    # each shard did only its part: shard 0 some series, shard 1 the others and nothing of 0's
    by_0, by_1 = set(finished[0]), set(finished[1]) - set(finished[0])
    assert by_0 and by_1, "one shard did every series"
    assert all(finished[1][k] == t for k, t in finished[0].items())
    assert all(int(k, 16) % 2 == 0 for k in by_0) and all(int(k, 16) % 2 == 1 for k in by_1)
    one, two = _outputs(single), _outputs(sharded)
    assert sorted(one) == sorted(two) and len(one) == 4
    for key in one:
        np.testing.assert_array_equal(one[key][0], two[key][0])
        assert one[key][1] == two[key][1]  # identical deterministic UIDs
    record = json.loads((single / next(iter(one)) / "job.json").read_text())
    assert record["noise_hu_after"] < record["noise_hu_before"]
    for job in (p for p in single.iterdir() if p.is_dir()):  # sigma maps and previews
        assert (job / "sigma_maps").is_dir() and (job / "preview" / "denoised.png").is_file()
    # a re-run does no work
    r = medssl("denoise", "--batch", studies, "-o", single, *FAST)
    assert r.code == 0 and r.stdout.count("already done") == 4


def test_a_killed_batch_resumes_without_redoing_finished_series(studies, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medssl", "denoise", "--batch", str(studies), "-o", str(out)]
    cmd += FAST
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.time() + 300

    def records():  # finished jobs only: not a job still in its hidden temporary folder
        return [p for p in out.glob("*/job.json") if not p.parent.name.startswith(".")]

    while time.time() < deadline and not records():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in records()}
    assert 1 <= len(finished) < 4, "killed too late to test resuming"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("already done") == len(finished)
    after = {p.parent.name: p.stat().st_mtime_ns for p in records()}
    assert len(after) == 4 and all(after[k] == v for k, v in finished.items())
    assert not list(out.glob(".*.tmp"))


def test_batch_refuses_single_scan_options_and_bad_shards(medssl, studies, tmp_path):
    r = medssl("denoise", "--batch", studies, "-o", tmp_path / "o", "--roi", "0:1,0:5,0:5")
    assert r.code == 2 and "--roi cannot be used with --batch" in r.stderr
    r = medssl("denoise", "--batch", studies, "-o", tmp_path / "o", "--shard", "2/2")
    assert r.code == 2 and "0 <= i < n" in r.stderr
    r = medssl("denoise", "--batch", studies, "-o", studies / "inside")
    assert r.code == 2 and "overlap" in r.stderr
    assert not (tmp_path / "o").exists()
