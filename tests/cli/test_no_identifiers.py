"""Planted patient-identifying values never appear in console output, logs or errors."""

from __future__ import annotations

import gzip
import json
import logging

import pydicom
import pytest

from medssl.io import InputError, MultipleSeriesError, read_volume
from medssl.io.dicom_read import scrub
from tests.io.dicom_factory import PLANTED, small_ct, write_series


def _needles() -> list[str]:
    needles = set(PLANTED.values())
    for value in PLANTED.values():  # person-name components on their own
        needles.update(p for p in value.split("^") if len(p) >= 4)
    return sorted(needles)


def _assert_clean(text: str) -> None:
    for needle in _needles():
        assert needle not in text, f"identifying value {needle!r} leaked"


@pytest.fixture
def planted(tmp_path):
    root = tmp_path / "study"
    write_series(
        small_ct(seed=1), root / "a", series_uid="1.2.826.0.1.3680043.99.11", description="axial"
    )
    write_series(
        small_ct(seed=2), root / "b", series_uid="1.2.826.0.1.3680043.99.12", description="other"
    )
    # a corrupt file of the same patient: truncated pixel data
    src = sorted((root / "a").glob("*.dcm"))[0]
    ds = pydicom.dcmread(src)
    ds.PixelData = ds.PixelData[:100]
    (tmp_path / "bad").mkdir()
    ds.save_as(tmp_path / "bad" / "broken.dcm")
    return root


def test_cli_outputs_hold_no_identifiers(medssl, planted, tmp_path):
    one = sorted((planted / "a").glob("*.dcm"))[0]
    runs = [
        medssl("-v", "info", one),
        medssl("-v", "info", "--json", one),
        medssl("-v", "info", planted),
        medssl("-v", "info", planted, "--series", "1"),
        medssl("-v", "info", "--json", planted, "--series", "2"),
        medssl("-v", "convert", planted, tmp_path / "x.nii.gz"),  # several series: refused
        medssl("-v", "convert", planted, tmp_path / "x.nii.gz", "--series", "1"),
        medssl("-v", "convert", planted / "a", tmp_path / "derived"),
        medssl("-v", "convert", planted / "a", tmp_path / "derived"),  # exists: refused
        medssl("-v", "info", tmp_path / "bad" / "broken.dcm"),  # decode error
        medssl("-v", "info", planted / "a", "--series", "nonexistent"),
    ]
    codes = [r.code for r in runs]
    assert codes == [0, 0, 0, 0, 0, 2, 0, 0, 2, 2, 2], [r.output for r in runs]
    for r in runs:
        _assert_clean(r.output)
    # the NIfTI written from the series holds no identifiers either: search the decompressed
    # file (header and data), not the gzip stream, where no plain text can be found
    nifti = gzip.decompress((tmp_path / "x.nii.gz").read_bytes())
    _assert_clean(nifti.decode("latin-1"))
    # the derived series keeps the patient (for PACS) but nothing of it reached the console
    assert PLANTED["PatientID"].encode() in b"".join(
        p.read_bytes() for p in (tmp_path / "derived").glob("*.dcm")
    )


def test_library_messages_metadata_and_logs_hold_no_identifiers(planted, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MultipleSeriesError) as info:
        read_volume(planted)
    texts = [str(info.value)]
    volume = read_volume(planted, series="1")
    texts += [repr(volume), json.dumps(volume.summary(), default=str), str(volume.meta)]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        _assert_clean(text)


def test_scrub_removes_identifying_values():
    ds = pydicom.Dataset()
    for kw, value in PLANTED.items():
        setattr(ds, kw, value)
    text = f"bad value {PLANTED['PatientName']} / {PLANTED['PatientID']} near Plantedname"
    cleaned = scrub(text, ds)
    _assert_clean(cleaned)
    assert "<redacted>" in cleaned


def test_error_from_corrupt_file_names_file_not_patient(planted, tmp_path):
    with pytest.raises(InputError) as info:
        read_volume(tmp_path / "bad" / "broken.dcm")
    assert "broken.dcm" in str(info.value)
    _assert_clean(str(info.value))
