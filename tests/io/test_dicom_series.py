"""DICOM series reading and the derived-series writer."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medssl.io import (
    InputError,
    MultipleSeriesError,
    Volume,
    derive_uid,
    read_volume,
    write_dicom_series,
    write_volume,
)
from tests.io.dicom_factory import PLANTED, small_ct, write_series


def _files(folder):
    return sorted(folder.glob("*.dcm"))


def test_lung1_round_trip_through_dicom(lung1, tmp_path):
    """lung1 -> derived DICOM series -> read back: HU within int16 quantisation, same grid."""
    out = tmp_path / "lung1_dcm"
    write_volume(lung1, out, modality="CT")
    back = read_volume(out)
    assert back.shape == lung1.shape == (48, 512, 512)
    assert np.max(np.abs(back.array - lung1.array)) <= 0.5
    assert np.allclose(back.spacing, lung1.spacing, atol=1e-6)
    assert np.allclose(back.origin, lung1.origin, atol=1e-4)
    assert np.allclose(back.direction, lung1.direction, atol=1e-6)
    assert back.modality == "CT"

    # SimpleITK reads the same series with the same geometry and values
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out)))
    image = reader.Execute()
    assert np.allclose(image.GetSpacing(), lung1.spacing[::-1], atol=1e-6)
    assert np.allclose(image.GetOrigin(), lung1.origin, atol=1e-4)
    assert np.allclose(np.reshape(image.GetDirection(), (3, 3)), lung1.direction[:, ::-1])
    assert np.max(np.abs(sitk.GetArrayFromImage(image) - lung1.array)) <= 0.5


def test_sorted_by_position_not_instance_number(tmp_path):
    vol = small_ct()
    folder = tmp_path / "s"
    files = write_series(vol, folder)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(files))
    # scramble InstanceNumber and file names: only positions tell the order
    for f, new in zip(files, order, strict=True):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(new) + 1
        ds.save_as(f)
    for i, f in enumerate(files):
        f.rename(folder / f"x{order[i]:03d}.dcm")
    back = read_volume(folder)
    np.testing.assert_array_equal(back.array, vol.array)
    assert np.allclose(back.origin, vol.origin)


def test_reversed_slice_axis_keeps_physical_positions(tmp_path):
    vol = small_ct()
    flipped = Volume(
        vol.array[::-1].copy(),
        spacing=vol.spacing,
        origin=tuple(vol.index_to_physical([vol.shape[0] - 1, 0, 0])),
        direction=vol.direction @ np.diag([-1.0, 1.0, 1.0]),
        modality="CT",
    )
    write_series(flipped, tmp_path / "s")
    back = read_volume(tmp_path / "s")
    # the reader orders slices along the slice normal: the original orientation comes back
    np.testing.assert_array_equal(back.array, vol.array)
    assert np.allclose(back.origin, vol.origin)


def test_multiple_series_listed_without_identifiers_and_selectable(tmp_path):
    a, b = small_ct(seed=1), small_ct(seed=2)
    write_series(
        a, tmp_path / "both" / "a", series_uid="1.2.826.0.1.3680043.99.1", description="first"
    )
    write_series(
        b, tmp_path / "both" / "b", series_uid="1.2.826.0.1.3680043.99.2", description="second"
    )
    with pytest.raises(MultipleSeriesError) as info:
        read_volume(tmp_path / "both")
    text = str(info.value)
    assert len(info.value.series) == 2
    assert "first" not in text and "second" not in text  # free text is not printed
    assert "--series" in text and "--show-descriptions" in text
    for value in PLANTED.values():
        assert value not in text
    assert "1.2.826.0.1.3680043.99.1" not in text  # UIDs are shown as hashed keys only
    by_index = [read_volume(tmp_path / "both", series=str(i)) for i in (1, 2)]
    got = {float(v.array.sum()) for v in by_index}
    assert got == {float(a.array.sum()), float(b.array.sum())}
    key = by_index[1].meta["series_key"]
    np.testing.assert_array_equal(
        read_volume(tmp_path / "both", series=key[:6]).array, by_index[1].array
    )
    np.testing.assert_array_equal(
        read_volume(tmp_path / "both", series="1.2.826.0.1.3680043.99.2").array, b.array
    )
    with pytest.raises(InputError, match="matches 0"):
        read_volume(tmp_path / "both", series="ffffffff")


def test_localizer_in_series_is_excluded_and_reported(tmp_path):
    vol = small_ct()
    folder = tmp_path / "s"
    files = write_series(vol, folder)
    ds = pydicom.dcmread(files[0])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # a sagittal scout
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.77"
    ds.save_as(folder / "scout.dcm")
    back = read_volume(folder)
    np.testing.assert_array_equal(back.array, vol.array)
    assert any("localizer" in w for w in back.warnings)


def test_missing_slice_is_reported(tmp_path):
    vol = small_ct(shape=(8, 16, 16))
    files = write_series(vol, tmp_path / "s")
    files[4].unlink()
    back = read_volume(tmp_path / "s")
    assert back.shape[0] == 7
    assert any("missing slices" in w for w in back.warnings)


def test_irregular_spacing_is_reported(tmp_path):
    vol = small_ct(shape=(6, 16, 16))
    files = write_series(vol, tmp_path / "s")
    ds = pydicom.dcmread(files[2])
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ipp[2] += 0.8  # 0.8 mm off a 2.5 mm grid
    ds.ImagePositionPatient = ipp
    ds.save_as(files[2])
    back = read_volume(tmp_path / "s")
    assert any("irregular slice spacing" in w for w in back.warnings)


def test_duplicate_positions_are_refused(tmp_path):
    vol = small_ct(shape=(4, 16, 16))
    files = write_series(vol, tmp_path / "s")
    ds = pydicom.dcmread(files[1])
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.78"
    ds.save_as(tmp_path / "s" / "dup.dcm")
    with pytest.raises(InputError, match="distinct slice positions"):
        read_volume(tmp_path / "s")


def test_derived_uids_are_deterministic_and_well_formed(tmp_path):
    vol = small_ct()
    f1 = write_dicom_series(vol, tmp_path / "a", settings={"strength": 1.0})
    f2 = write_dicom_series(vol, tmp_path / "b", settings={"strength": 1.0})
    f3 = write_dicom_series(vol, tmp_path / "c", settings={"strength": 0.5})
    uids = lambda fs: [  # noqa: E731
        (str(d.SeriesInstanceUID), str(d.SOPInstanceUID), str(d.StudyInstanceUID))
        for d in map(pydicom.dcmread, fs)
    ]
    u1, u2, u3 = uids(f1), uids(f2), uids(f3)
    assert u1 == u2
    assert u1[0][0] != u3[0][0] and u1[0][2] == u3[0][2]  # settings change the series only
    assert len({u[1] for u in u1}) == len(u1)  # one SOPInstanceUID per file
    for series_uid, sop_uid, _ in u1:
        for uid in (series_uid, sop_uid):
            assert uid.startswith("2.25.") and uid[5:].isdigit() and len(uid) <= 64
    # the documented construction: 2.25. + first 128 bits of SHA-256, as a decimal integer
    h = hashlib.sha256()
    for part in ("x", "y"):
        h.update(len(part).to_bytes(8, "big") + part.encode())
    assert derive_uid("x", "y") == f"2.25.{int.from_bytes(h.digest()[:16], 'big')}"


def test_derived_series_from_dicom_keeps_patient_study_frame_of_reference(tmp_path):
    vol = small_ct()
    src_files = write_series(vol, tmp_path / "src")
    src = pydicom.dcmread(src_files[0])
    loaded = read_volume(tmp_path / "src")
    out = write_dicom_series(
        loaded.with_array(loaded.array + 1), tmp_path / "out", derivation="test denoising"
    )
    derived = [pydicom.dcmread(f) for f in out]
    d0 = derived[0]
    for kw in (
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "FrameOfReferenceUID",
        "AccessionNumber",
    ):
        assert str(d0[kw].value) == str(src[kw].value), kw
    assert d0.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(d0.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert d0.DerivationDescription == "test denoising"
    src_uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in src_files}
    refs = {str(d.SourceImageSequence[0].ReferencedSOPInstanceUID) for d in derived}
    assert refs == src_uids
    back = read_volume(tmp_path / "out")
    np.testing.assert_allclose(back.array, vol.array + 1, atol=0.5)


def test_non_dicom_source_gets_placeholder_patient_and_modality_check(tmp_path):
    vol = small_ct()
    nifti = write_volume(Volume(vol.array, spacing=vol.spacing), tmp_path / "x.nii.gz")
    loaded = read_volume(nifti)
    files = write_dicom_series(loaded, tmp_path / "ct")
    d0 = pydicom.dcmread(files[0])
    assert d0.Modality == "CT" and str(d0.PatientName) == "MEDSSL^ANONYMOUS"
    assert d0.StudyInstanceUID == derive_uid("study", loaded.content_hash())
    scaled = loaded.with_array((loaded.array + 1000) / 2500)  # min-max scaled: not HU
    with pytest.raises(InputError, match="do not look like CT"):
        write_dicom_series(scaled, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    files = write_dicom_series(scaled, tmp_path / "mr", modality="MR")
    back = read_volume(tmp_path / "mr")
    assert pydicom.dcmread(files[0]).Modality == "MR"
    step = float(pydicom.dcmread(files[0]).RescaleSlope)
    assert np.max(np.abs(back.array - scaled.array)) <= step / 2 + 1e-6


def test_writes_are_atomic_and_never_overwrite(tmp_path):
    vol = small_ct()
    out = tmp_path / "out"
    write_dicom_series(vol, out)
    before = {f.name: f.read_bytes() for f in _files(out)}
    with pytest.raises(InputError, match="already exists"):
        write_dicom_series(vol.with_array(vol.array + 5), out)
    assert {f.name: f.read_bytes() for f in _files(out)} == before
    bad = vol.with_array(np.where(vol.array > 0, np.nan, vol.array))
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(bad, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary leftovers


def test_reading_does_not_modify_inputs(tmp_path):
    vol = small_ct()
    files = write_series(vol, tmp_path / "s")
    digest = lambda: {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}  # noqa: E731
    before = digest()
    loaded = read_volume(tmp_path / "s")
    write_volume(loaded, tmp_path / "o.nii.gz")
    write_volume(loaded, tmp_path / "o_dcm")
    assert digest() == before


def test_enhanced_multiframe_ct_with_per_frame_rescale(tmp_path):
    """A Legacy Converted Enhanced CT made by highdicom from a classic series whose slices
    have different rescale intercepts: per-frame functional groups give positions and HU."""
    highdicom = pytest.importorskip("highdicom")
    vol = small_ct(shape=(5, 16, 12))
    files = write_series(vol, tmp_path / "classic", plant=False)
    datasets = []
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        intercept = -2048 - 10 * k
        stored = (ds.pixel_array.astype(np.int32) - intercept).astype(np.uint16)
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = intercept
        ds.PixelData = stored.tobytes()
        ds.StudyDate, ds.StudyTime = "20240101", "120000"
        ds.SeriesDate, ds.SeriesTime = "20240101", "120000"
        ds.ContentDate, ds.ContentTime = "20240101", "120000"
        ds.AcquisitionDate, ds.AcquisitionTime = "20240101", "120000"
        ds.PatientSex = "O"
        datasets.append(ds)
    rng = np.random.default_rng(0)
    datasets = [datasets[i] for i in rng.permutation(len(datasets))]
    enhanced = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=highdicom.UID(),
        series_number=99,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )
    path = tmp_path / "enhanced.dcm"
    enhanced.save_as(path)
    back = read_volume(path)
    assert back.shape == vol.shape
    np.testing.assert_array_equal(back.array, vol.array)
    assert np.allclose(back.origin, vol.origin) and np.allclose(back.spacing, vol.spacing)


def test_folder_copy_reads_identically(tmp_path):
    vol = small_ct()
    write_series(vol, tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "nested" / "deeper")
    np.testing.assert_array_equal(read_volume(tmp_path / "nested").array, vol.array)
