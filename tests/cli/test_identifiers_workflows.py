"""Identifiers through the workflows: `denoise` (one series, and `--batch`) and a pipeline
with a report, with and without `--deidentify`, on a study with a value planted into every
identifying attribute. Every output (files, decompressed NIfTI, job and pipeline records,
logs, the report, file and folder names) and the console are searched for every planted
value. Without `--deidentify` only the derived DICOM series keep the patient and study (they
go back to PACS); with it nothing does."""

from __future__ import annotations

from pathlib import Path

import pydicom
import yaml

from tests.cli.test_identifiers import _clean_console, _first, _tree_is_clean
from tests.io.test_deidentify import SALT, STUDY_UID, find_needles

FAST = ["--steps", "2", "--threads", "1"]


def _dicom_folders(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("*.dcm")})


def _clean_but_dicom(root: Path) -> None:
    """No planted value anywhere below ``root`` except inside the derived DICOM files."""
    for path in [root, *root.rglob("*")]:
        assert find_needles(str(path.relative_to(root.parent))) == [], path
        if path.is_file() and path.suffix != ".dcm":
            _tree_is_clean(path)


def test_denoise_keeps_the_patient_only_in_the_derived_series(medssl, study, tmp_path):
    out = tmp_path / "out"
    r = medssl(
        "-v", "denoise", study / "a", "-o", out / "derived", "--sigma-maps", out / "maps",
        "--save-model", out / "f2n.pt", *FAST,
    )  # fmt: skip
    assert r.code == 0, r.output
    _clean_console(r)
    _clean_but_dicom(out)
    ds = _first(out / "derived")
    assert ds.PatientID == "PLANTEDPID7733" and ds.StudyInstanceUID == STUDY_UID


def test_denoise_with_deidentify_leaves_no_planted_value(medssl, study, tmp_path, salt_file):
    out = tmp_path / "out"
    r = medssl(
        "-v", "denoise", study / "a", "-o", out / "derived", "--sigma-maps", out / "maps",
        "--save-model", out / "f2n.pt", "--deidentify", "--deidentify-salt-file", salt_file,
        *FAST,
    )  # fmt: skip
    assert r.code == 0, r.output
    _clean_console(r)
    _tree_is_clean(out)
    ds = _first(out / "derived")
    assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID != STUDY_UID


def test_batch_with_and_without_deidentify(medssl, study, tmp_path):
    env = {"MEDSSL_DEID_SALT": SALT.decode()}
    plain, deid = tmp_path / "plain", tmp_path / "deid"
    r = medssl("-v", "denoise", "--batch", study, "-o", plain, *FAST)
    assert r.code == 0, r.output
    _clean_console(r)
    _clean_but_dicom(plain)
    assert len(_dicom_folders(plain)) == 2
    r = medssl("-v", "denoise", "--batch", study, "-o", deid, "--deidentify", *FAST, env=env)
    assert r.code == 0, r.output
    _clean_console(r)
    _tree_is_clean(deid)
    # the job folders' names are salted hashes: not those of the plain run
    jobs = {p.name for p in plain.iterdir() if p.is_dir()}
    assert jobs.isdisjoint(p.name for p in deid.iterdir() if p.is_dir())
    studies = set()
    for folder in _dicom_folders(deid):
        ds = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES"
        studies.add(ds.StudyInstanceUID)
    assert len(studies) == 1 and STUDY_UID not in studies  # still one study


def _pipeline(tmp_path: Path, output: Path, study: Path, deidentify: dict | None) -> Path:
    spec: dict = {
        "output": str(output),
        "stages": {
            "load": {"input": [str(study)]},
            "denoise": {"steps": 2, "threads": 1, "format": "dicom"},
            "report": {},
        },
    }
    if deidentify is not None:
        spec["deidentify"] = deidentify
    path = tmp_path / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_pipeline_with_report_with_and_without_deidentify(medssl, study, tmp_path, salt_file):
    plain, deid = tmp_path / "plain", tmp_path / "deid"
    r = medssl("-v", "pipeline", "run", _pipeline(tmp_path, plain, study, None))
    assert r.code == 0, r.output
    _clean_console(r)
    _clean_but_dicom(plain)  # pipeline.json, logs, job records, previews, the report
    assert (plain / "report" / "report.html").is_file()
    spec = _pipeline(tmp_path, deid, study, {"salt_file": str(salt_file), "dates": "remove"})
    r = medssl("-v", "pipeline", "run", spec)
    assert r.code == 0, r.output
    _clean_console(r)
    _tree_is_clean(deid)
    assert SALT.decode() not in "".join(
        p.read_text(errors="replace") for p in deid.rglob("*") if p.suffix in (".json", ".log")
    )
    for folder in _dicom_folders(deid):
        ds = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES" and ds.StudyDate == ""
