"""Hostile and broken headers: sizes checked before allocating, NaN/Inf counted.

Each hostile file is a few hundred bytes whose header claims an enormous image (100000³ voxels
where the format allows it, 32767³ for NIfTI-1, 65535 x 65535 x 99999 frames for DICOM). The
readers must refuse it with an :class:`InputError` that quotes the claimed size, before
allocating anything (neither a ``MemoryError`` nor a message blaming a corrupt file).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import resource
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

from medssl.cli.app import main
from medssl.io import (
    MAX_VOXELS_ENV,
    InputError,
    Volume,
    count_nonfinite,
    read_volume,
    replace_nonfinite,
    require_finite,
    write_volume,
)
from tests.io.dicom_factory import small_ct, write_series

HUGE = (100000, 100000, 100000)
HUGE_TEXT = "100000 x 100000 x 100000"
NIFTI1_MAX = (32767, 32767, 32767)  # NIfTI-1 dims are int16
DATA = bytes(range(256)) * 3  # a few hundred bytes of "pixel data"


# ---- hostile files -------------------------------------------------------------------------
def _nifti(path: Path, shape: tuple[int, ...] = NIFTI1_MAX) -> Path:
    """A NIfTI-1 file: a 348-byte header claiming ``shape`` float32 voxels, then 768 bytes."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    blob = header.binaryblock + b"\0" * 4 + DATA
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


def _nrrd(path: Path, encoding: str = "raw", sizes: tuple[int, ...] = HUGE) -> Path:
    """An NRRD header claiming ``sizes`` float voxels; data attached, or detached for .nhdr."""
    data = {
        "raw": DATA,
        "gzip": gzip.compress(DATA),
        "bzip2": bz2.compress(DATA),
    }[encoding]
    header = (
        "NRRD0004\ntype: float\ndimension: 3\n"
        f"sizes: {' '.join(map(str, sizes))}\nencoding: {encoding}\nendian: little\n"
    )
    if path.suffix == ".nhdr":
        (path.parent / "data.raw").write_bytes(data)
        path.write_text(header + "data file: data.raw\n")
    else:
        path.write_bytes(header.encode() + b"\n" + data)
    return path


def _metaimage(path: Path, compressed: bool = False, dims: tuple[int, ...] = HUGE) -> Path:
    """An MHA (data attached) or MHD (data in a .raw/.zraw file) claiming ``dims``."""
    data = zlib.compress(DATA) if compressed else DATA
    header = (
        f"ObjectType = Image\nNDims = 3\nDimSize = {' '.join(map(str, dims))}\n"
        f"ElementType = MET_FLOAT\nCompressedData = {compressed}\n"
    )
    if path.suffix == ".mhd":
        name = "data.zraw" if compressed else "data.raw"
        (path.parent / name).write_bytes(data)
        path.write_text(header + f"ElementDataFile = {name}\n")
    else:
        path.write_bytes((header + "ElementDataFile = LOCAL\n").encode() + data)
    return path


def _dicom(path: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    """A CT file claiming 65535 x 65535 pixels x 99999 frames of 16 bits, with 768 bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 99999
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if syntax == ExplicitVRLittleEndian:
        ds.PixelData = DATA
    else:
        ds.PixelData = encapsulate([DATA])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


#: kind: (make the file in a folder, the claimed size as the message quotes it, why it is
#: refused: the file cannot hold it, compressed data cannot expand to it, or only the cap).
HOSTILE = {
    "nii": (lambda d: _nifti(d / "h.nii"), "32767 x 32767 x 32767", "holds only"),
    "nii.gz": (lambda d: _nifti(d / "h.nii.gz"), "32767 x 32767 x 32767", "to at most"),
    "nrrd-raw": (lambda d: _nrrd(d / "h.nrrd"), HUGE_TEXT, "holds only"),
    "nrrd-gzip": (lambda d: _nrrd(d / "h.nrrd", "gzip"), HUGE_TEXT, "to at most"),
    "nrrd-bzip2": (lambda d: _nrrd(d / "h.nrrd", "bzip2"), HUGE_TEXT, "limit of"),
    "nhdr-raw": (lambda d: _nrrd(d / "h.nhdr"), HUGE_TEXT, "holds only"),
    "nhdr-gzip": (lambda d: _nrrd(d / "h.nhdr", "gzip"), HUGE_TEXT, "to at most"),
    "mha": (lambda d: _metaimage(d / "h.mha"), HUGE_TEXT, "holds only"),
    "mha-compressed": (lambda d: _metaimage(d / "h.mha", True), HUGE_TEXT, "to at most"),
    "mhd": (lambda d: _metaimage(d / "h.mhd"), HUGE_TEXT, "holds only"),
    "mhd-compressed": (lambda d: _metaimage(d / "h.mhd", True), HUGE_TEXT, "to at most"),
    "dicom": (lambda d: _dicom(d / "h.dcm"), "65535 x 65535 x 99999", "holds only"),
    "dicom-rle": (lambda d: _dicom(d / "h.dcm", RLELossless), "65535 x 65535 x 99999", "limit of"),
    "dicom-folder": (
        lambda d: _dicom(d / "series" / "h.dcm").parent,
        "65535 x 65535 x 99999",
        "limit of",
    ),
}


@contextlib.contextmanager
def _allocates_little() -> Iterator[None]:
    """Fail if the block takes long, or grows Python's heap or the process's peak memory
    (the ITK and decoder buffers are not traced, but would raise the peak RSS) by much."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_kib) * 1024
    assert traced < 50e6, f"{traced / 1e6:.0f} MB allocated by Python/numpy"
    assert grown < 200e6, f"peak memory grew by {grown / 1e6:.0f} MB"
    assert seconds < 10, f"took {seconds:.1f} s"


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_huge_claim_is_refused_before_allocating(tmp_path, kind):
    make, claimed, reason = HOSTILE[kind]
    path = make(tmp_path)
    with _allocates_little(), pytest.raises(InputError) as info:
        read_volume(path)
    msg = str(info.value)
    assert "the header claims " + claimed in msg, msg
    assert "nothing was allocated" in msg.lower(), msg
    assert "cannot read the image data" not in msg and "cannot decode" not in msg, msg
    assert str(path) in msg
    if reason == "limit of":  # no bound from the file (bzip2, compressed DICOM, a series)
        assert "limit of" in msg and f"{MAX_VOXELS_ENV}=" in msg, msg
    else:  # the file cannot hold the claim: raising the cap would not help, so no hint to
        if reason == "to at most":
            assert "decompresses to at most" in msg, msg
        else:
            assert f"holds only {len(DATA)} bytes" in msg, msg
        assert f"{MAX_VOXELS_ENV}=" not in msg, msg


def test_the_file_size_is_checked_below_the_cap(tmp_path, monkeypatch):
    """A claim under the voxel cap that the file cannot hold: refused with both sizes."""
    monkeypatch.setenv(MAX_VOXELS_ENV, str(10**9))
    path = _nrrd(tmp_path / "h.nrrd", sizes=(400, 400, 300))
    with _allocates_little(), pytest.raises(InputError) as info:
        read_volume(path)
    msg = str(info.value)
    assert "400 x 400 x 300 (x, y, z) = 48,000,000 voxels of 4 byte(s)" in msg, msg
    assert "holds only 768 bytes of image data" in msg and "limit" not in msg, msg
    path = _metaimage(tmp_path / "h.mhd", compressed=True, dims=(400, 400, 300))
    with pytest.raises(InputError, match="decompresses to at most"):
        read_volume(path)


def test_a_missing_detached_data_file_is_named(tmp_path):
    path = _metaimage(tmp_path / "h.mhd", dims=(4, 4, 4))
    (tmp_path / "data.raw").unlink()
    with pytest.raises(InputError, match=r"the data file the header names \(data.raw\) does not"):
        read_volume(path)


def _small_images(folder: Path) -> dict[str, Path]:
    """A real 4 x 5 x 6 image (120 voxels) in every format."""
    vol = Volume(np.arange(120, dtype=np.float32).reshape(4, 5, 6) - 60.0)
    paths = {s: write_volume(vol, folder / f"v{s}") for s in (".nii", ".nii.gz", ".nrrd", ".mha")}
    ct = small_ct(shape=(4, 5, 6))
    write_series(ct, folder / "dicom", plant=False)
    paths["dicom"] = folder / "dicom"
    paths["dicom-file"] = sorted((folder / "dicom").iterdir())[0]
    return paths


def test_the_cap_can_be_lowered_and_raised(tmp_path, monkeypatch):
    paths = _small_images(tmp_path)
    for kind, path in paths.items():
        voxels = 30 if kind == "dicom-file" else 120
        monkeypatch.setenv(MAX_VOXELS_ENV, str(voxels - 1))
        with pytest.raises(InputError) as info:
            read_volume(path)
        msg = str(info.value)
        assert f"= {voxels:,} voxels" in msg and f"limit of {voxels - 1:,} voxels" in msg, kind
        assert f"{MAX_VOXELS_ENV}={voxels}" in msg and f"set by {MAX_VOXELS_ENV}" in msg, kind
        monkeypatch.setenv(MAX_VOXELS_ENV, str(voxels))
        assert read_volume(path).array.size == voxels, kind


@pytest.mark.parametrize("value", ["many", "-5", "0", "1.5"])
def test_a_bad_cap_setting_is_a_clear_error(tmp_path, monkeypatch, value):
    path = write_volume(Volume(np.zeros((2, 3, 4))), tmp_path / "v.nrrd")
    monkeypatch.setenv(MAX_VOXELS_ENV, value)
    with pytest.raises(InputError, match=f"{MAX_VOXELS_ENV}=.* is not a positive whole number"):
        read_volume(path)


def test_info_on_a_hostile_header_exits_2_with_the_message(tmp_path, capsys):
    for path in (_nrrd(tmp_path / "h.nrrd"), _dicom(tmp_path / "h.dcm")):
        with pytest.raises(SystemExit) as exited:
            main(["info", str(path)])
        err = capsys.readouterr().err
        assert exited.value.code == 2, err
        assert "the header claims" in err and "Traceback" not in err, err
        assert "internal error" not in err, err


# ---- NaN and infinite voxels ---------------------------------------------------------------
def _with_nonfinite() -> np.ndarray:
    """(z, y, x) CT-like values with 12 NaN, 2 +inf and 1 -inf voxels at scattered places."""
    rng = np.random.default_rng(3)
    arr = rng.normal(-300, 400, size=(4, 6, 7)).astype(np.float32)
    flat = arr.reshape(-1)
    places = rng.choice(flat.size, size=15, replace=False)
    flat[places[:12]] = np.nan
    flat[places[12:14]] = np.inf
    flat[places[14]] = -np.inf
    return arr


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_nan_and_inf_are_kept_and_counted(tmp_path, suffix):
    arr = _with_nonfinite()
    path = tmp_path / f"v{suffix}"
    if suffix.startswith(".nii"):  # written by nibabel, not by medssl: (x, y, z) order
        nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), np.eye(4)), path)
    else:
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.array, arr)  # NaN where NaN, +-inf where +-inf
    count = count_nonfinite(vol)
    assert (count.nan, count.posinf, count.neginf) == (12, 2, 1)
    assert "the image holds 12 NaN and 3 infinite voxels (of 168 voxels)" in vol.warnings
    assert vol.summary()["nonfinite"] == {"nan": 12, "posinf": 2, "neginf": 1}
    with pytest.raises(InputError) as info:
        require_finite(vol, path=path)
    assert "the image holds 12 NaN and 3 infinite voxels" in str(info.value)
    assert str(path) in str(info.value)


def test_nifti_nonfinite_values_follow_the_scaling(tmp_path):
    """A scaled float NIfTI (scl_slope -2): +inf on disk is -inf in the image, as nibabel says."""
    raw = np.arange(24, dtype=np.float32).reshape(4, 3, 2)  # (x, y, z)
    raw[0, 0, 0], raw[1, 0, 0], raw[3, 2, 1] = np.nan, np.inf, -np.inf
    header = nib.Nifti1Header(endianness=">")
    header.set_data_shape(raw.shape)
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    header["scl_slope"], header["scl_inter"] = -2.0, 1.0
    path = tmp_path / "scaled.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + raw.astype(">f4").tobytes(order="F"))
    expected = nib.load(path).get_fdata().transpose(2, 1, 0).astype(np.float32)
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.array, expected)
    assert count_nonfinite(vol) == (1, 1, 1)


def test_replace_nonfinite_returns_a_new_volume(tmp_path):
    path = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(_with_nonfinite()), str(path))
    vol = read_volume(path)
    fixed = replace_nonfinite(vol, -1024)
    bad = ~np.isfinite(vol.array)
    assert count_nonfinite(vol).total == 15 and count_nonfinite(fixed).total == 0
    assert np.all(fixed.array[bad] == -1024)
    np.testing.assert_array_equal(fixed.array[~bad], vol.array[~bad])
    assert fixed.same_grid(vol) and fixed is not vol
    assert "12 NaN and 3 infinite voxels replaced with -1024" in fixed.warnings
    assert not any("the image holds" in w for w in fixed.warnings)
    require_finite(fixed)
    with pytest.raises(ValueError, match="finite"):
        replace_nonfinite(vol, float("nan"))


def test_looks_like_ct_judges_the_finite_values():
    """NaN does not make a CT "not CT" (the caller reports NaN with its count instead)."""
    arr = small_ct(shape=(4, 24, 20)).array.copy()
    assert Volume(arr).looks_like_ct()
    arr[0, :3, :3] = np.nan
    arr[1, 0, 0] = np.inf
    assert Volume(arr).looks_like_ct()
    assert not Volume(np.full((2, 3, 4), np.nan)).looks_like_ct()
