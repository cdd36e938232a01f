"""What the commands do with outputs a hospital's data would be hurt by: unwritable or full
locations, outputs inside inputs, folders medssl did not make, and bad members of a batch."""

from __future__ import annotations

import json

import pytest
import yaml

from medssl.io import OWNER_MARKER, Volume, write_dicom_series, write_volume
from tests.denoise.phantom import phantom
from tests.io.test_safe_writes import _mount, left_by_a_killed_run

FAST = ["--steps", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scan")
    vol, _ = phantom((2, 40, 44), seed=1)
    write_volume(vol, folder / "ct.nii.gz")
    return folder / "ct.nii.gz"


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_read_only_output_is_refused_before_fitting(medssl, scan, tmp_path):
    with _mount(tmp_path / "ro", "ro,size=64k") as ro:
        r = medssl("denoise", scan, "-o", ro / "out.nii.gz", *FAST)
        assert r.code == 2, r.output
        assert str(ro) in r.stderr and "read-only" in r.stderr.lower()
        assert "fitted" not in r.stdout and "Traceback" not in r.output
        r = medssl("denoise", scan, "-o", tmp_path / "a.nii.gz", "--sigma-maps", ro / "m", *FAST)
        assert r.code == 2 and "fitted" not in r.stdout, r.output
    assert not (tmp_path / "a.nii.gz").exists()


def test_a_full_disk_gives_exit_4_and_none_of_the_outputs(medssl, scan, tmp_path):
    with _mount(tmp_path / "full", "size=96k") as full:
        r = medssl(
            "denoise", scan, "-o", tmp_path / "out.nii.gz", "--sigma-maps", full / "maps", *FAST
        )
        assert r.code == 4, r.output
        assert "nothing was written" in r.stderr and "Traceback" not in r.output
        assert _tree(full) == []  # no half-written maps, no temporary folder
    assert not (tmp_path / "out.nii.gz").exists()  # the image waits for the maps


def test_batch_output_inside_the_folder_of_a_dicom_file_is_refused(medssl, tmp_path):
    vol, _ = phantom((2, 32, 32))
    files = write_dicom_series(vol, tmp_path / "series")
    r = medssl("denoise", "--batch", files[0], "-o", tmp_path / "series" / "out", *FAST)
    assert r.code == 2 and "overlap" in r.stderr, r.output
    assert str(tmp_path / "series") in r.stderr
    assert not (tmp_path / "series" / "out").exists()


def test_a_batch_skips_bad_series_and_does_the_rest(medssl, tmp_path):
    studies = tmp_path / "studies"
    vol, _ = phantom((2, 32, 32))
    write_dicom_series(vol, studies / "ct")
    mr = Volume((vol.array + 2000).clip(0) / 10, spacing=vol.spacing, modality="MR")
    write_dicom_series(mr, studies / "mr", modality="MR")
    (studies / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    r = medssl("denoise", "--batch", studies, "-o", out, *FAST)
    assert r.code == 3, r.output
    assert "2 series skipped" in r.stderr and "1 series in" in r.stdout
    skipped = sorted(json.loads(p.read_text())["input"] for p in (out / "skipped").iterdir())
    assert skipped == ["broken.nii.gz", "mr"]
    reasons = " ".join(json.loads(p.read_text())["reason"] for p in (out / "skipped").iterdir())
    assert "not a CT" in reasons
    done = [p for p in out.iterdir() if (p / "job.json").is_file()]
    assert len(done) == 1 and (done[0] / OWNER_MARKER).is_file()


def test_a_batch_refuses_an_output_folder_medssl_did_not_make(medssl, scan, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "my_notes.txt").write_text("keep me")
    r = medssl("denoise", "--batch", scan, "-o", out, *FAST)
    assert r.code == 2 and "did not make" in r.stderr, r.output
    assert _tree(out) == ["my_notes.txt"]


def _pipeline(tmp_path, output, inputs):
    spec = {
        "output": str(output),
        "stages": {"load": {"input": [str(p) for p in inputs]}, "denoise": {"steps": 2}},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_pipeline_never_reads_from_or_deletes_inside_what_it_did_not_make(medssl, scan, tmp_path):
    # the input inside the output: refused by check and by run, and the input survives
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    inp = out / "data" / "ct.nii.gz"
    inp.write_bytes(scan.read_bytes())
    spec = _pipeline(tmp_path, out, [inp])
    for cmd in ("check", "run"):
        r = medssl("pipeline", cmd, spec)
        assert r.code == 2 and "overlap" in r.stderr, r.output
        assert inp.read_bytes() == scan.read_bytes()
    # a stage folder the user made is never emptied
    out2 = tmp_path / "run2"
    r = medssl("pipeline", "run", _pipeline(tmp_path, out2, [scan]))
    assert r.code == 0, r.output
    denoise = out2 / "denoise"
    (denoise / OWNER_MARKER).unlink()  # as if the user had made this folder
    (denoise / "mine.txt").write_text("keep me")
    r = medssl("pipeline", "run", _pipeline(tmp_path, out2, [scan]), "--force", "denoise")
    assert r.code == 2 and "did not make" in r.stderr, r.output
    assert (denoise / "mine.txt").read_text() == "keep me"


def test_a_killed_write_leaves_no_patient_data_for_later_runs(medssl, tmp_path):
    vol, _ = phantom((2, 32, 32))
    write_dicom_series(vol, tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / OWNER_MARKER).write_text("{}")
    stale = left_by_a_killed_run(out, "abc")
    (stale / "00001.dcm").write_bytes(b"patient data")
    r = medssl("denoise", "--batch", tmp_path / "in", "-o", out, *FAST)
    assert r.code == 0, r.output
    assert not stale.exists()
