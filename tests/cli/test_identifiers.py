"""Identifiers through the real `medssl` command: `info` and `convert`, with and without
`--deidentify`, on a study with a value planted into every identifying attribute.

Every output is searched for every planted value: each written file (decompressed NIfTI
included), file and folder names, and the console (stdout, stderr, with the log messages of
``-v``).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pydicom

from tests.io.test_deidentify import (
    FOR_UID,
    OTHER_SALT,
    PLANTED_SERIES_DESCRIPTION,
    SALT,
    STUDY_UID,
    find_needles,
)

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # anything but a newline


def _clean_console(result) -> None:
    assert find_needles(result.output) == [], result.output
    assert not _CONTROL.search(result.output), repr(result.output)


def _tree_is_clean(root: Path) -> None:
    """No planted value in any file below ``root`` (gzip decompressed) or in any name."""
    paths = [root, *root.rglob("*")]
    assert paths
    for path in paths:
        assert find_needles(str(path.relative_to(root.parent))) == [], path
        if path.is_file():
            data = path.read_bytes()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            assert find_needles(data) == [], path


def _first(folder: Path) -> pydicom.Dataset:
    from medssl.io import quiet_pydicom

    with quiet_pydicom():  # the planted study UID is invalid on purpose
        ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
        for _ in ds.iterall():  # convert (and validate) every value inside the quiet block
            pass
        return ds


def test_info_prints_no_free_text_and_no_control_characters(medssl, study):
    runs = [
        medssl("-v", "info", study / "a"),
        medssl("-v", "info", "--json", study / "a"),
        medssl("-v", "info", sorted((study / "a").glob("*.dcm"))[0]),
        medssl("-v", "info", study),  # the listing of the two series
        medssl("-v", "info", "--json", study),
        medssl("-v", "info", study, "--series", "2"),
        medssl("-v", "info", study, "--series", "nonexistent"),  # error message with listing
    ]
    assert [r.code for r in runs] == [0, 0, 0, 0, 0, 0, 2], [r.output for r in runs]
    for r in runs:
        _clean_console(r)
    assert "ACMERED" in runs[0].stdout  # the Manufacturer, its escape sequences removed
    assert "series 1" in runs[3].stdout and "series 2" in runs[3].stdout  # told apart by number


def test_info_shows_descriptions_only_on_request_and_printable(medssl, study):
    r = medssl("info", study / "a", "--show-descriptions")
    assert r.code == 0, r.output
    assert PLANTED_SERIES_DESCRIPTION in r.stdout and "PLANTEDSTUDYDESC7745" in r.stdout
    assert "PLANTEDPROTOCOL7746" in r.stdout and "PLANTEDCOMMENT7747" in r.stdout
    assert "forged line" in r.stdout and not _CONTROL.search(r.output)
    assert "PLANTEDNAME7731" not in r.output and "PLANTEDPID7733" not in r.output
    r = medssl("info", study, "--show-descriptions")
    assert r.code == 0 and r.stdout.count(PLANTED_SERIES_DESCRIPTION) == 2
    assert not _CONTROL.search(r.output)
    r = medssl("info", "--json", study / "a", "--show-descriptions")
    assert r.code == 0 and PLANTED_SERIES_DESCRIPTION in r.stdout and "\\u001b" not in r.stdout


def test_convert_without_deidentify_keeps_patient_in_dicom_only(medssl, study, tmp_path):
    out = tmp_path / "out"
    runs = [
        medssl("-v", "convert", study / "a", out / "derived"),
        medssl("-v", "convert", study / "a", out / "image.nii.gz"),
        medssl("-v", "convert", study / "a", out / "image.nrrd"),
        medssl("-v", "convert", study, out / "x.nii.gz"),  # several series: refused
    ]
    assert [r.code for r in runs] == [0, 0, 0, 2], [r.output for r in runs]
    for r in runs:
        _clean_console(r)
    _tree_is_clean(out / "image.nii.gz")
    _tree_is_clean(out / "image.nrrd")
    # the derived series goes back to PACS: patient and study kept, by design
    ds = _first(out / "derived")
    assert ds.PatientID == "PLANTEDPID7733" and ds.StudyInstanceUID == STUDY_UID
    assert ds.FrameOfReferenceUID == FOR_UID and "PatientIdentityRemoved" not in ds


def test_convert_with_deidentify_leaves_no_planted_value_anywhere(
    medssl, study, tmp_path, salt_file
):
    out = tmp_path / "out"
    env = {"MEDSSL_DEID_SALT": SALT.decode()}
    other_env = {"MEDSSL_DEID_SALT": OTHER_SALT.decode()}
    salt_opt = ["--deidentify", "--deidentify-salt-file", salt_file]
    runs = [
        medssl("-v", "convert", study / "a", out / "a", *salt_opt),  # salt from the file
        medssl("-v", "convert", study / "b", out / "b", "--deidentify", env=env),  # from env
        medssl("-v", "convert", study / "a", out / "other", "--deidentify", env=other_env),
        medssl(
            "-v", "convert", study / "a", out / "removed", *salt_opt, "--deidentify-dates", "remove"
        ),
        medssl("-v", "convert", study / "a", out / "a.nii.gz", *salt_opt),
        medssl("-v", "convert", study / "b", out / "b.mha", "--deidentify", env=env),
    ]
    assert [r.code for r in runs] == [0] * len(runs), [r.output for r in runs]
    for r in runs:
        _clean_console(r)
        assert str(salt_file) not in r.output
    _tree_is_clean(out)
    a, b, other, removed = (_first(out / n) for n in ("a", "b", "other", "removed"))
    # two series of one study, converted separately with the same salt: still one study
    assert a.StudyInstanceUID == b.StudyInstanceUID != STUDY_UID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID != FOR_UID
    assert a.SeriesInstanceUID != b.SeriesInstanceUID
    assert a.PatientID == b.PatientID and a.PatientName == b.PatientName
    assert a.StudyDate == b.StudyDate and a.StudyDate not in ("", "19870623")
    # another salt: nothing links the outputs
    assert other.StudyInstanceUID != a.StudyInstanceUID
    assert other.FrameOfReferenceUID != a.FrameOfReferenceUID
    assert other.PatientID != a.PatientID and other.StudyDate != a.StudyDate
    assert removed.StudyDate == "" and "AcquisitionDate" not in removed
    for ds in (a, b, other, removed):
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod


def test_deidentify_refused_without_salt_and_salt_file_needs_the_option(
    medssl, study, tmp_path, salt_file
):
    r = medssl("convert", study / "a", tmp_path / "o", "--deidentify", env={"MEDSSL_DEID_SALT": ""})
    assert r.code == 2 and "MEDSSL_DEID_SALT" in r.output and "--deidentify-salt-file" in r.output
    assert not (tmp_path / "o").exists()
    short = tmp_path / "short.txt"
    short.write_text("PLANTEDSHORT\n")
    r = medssl(
        "convert", study / "a", tmp_path / "o", "--deidentify", "--deidentify-salt-file", short
    )
    assert r.code == 2 and "PLANTEDSHORT" not in r.output and not (tmp_path / "o").exists()
    r = medssl("convert", study / "a", tmp_path / "o", "--deidentify-salt-file", salt_file)
    assert r.code == 2 and "without --deidentify" in r.output
    assert not (tmp_path / "o").exists()
