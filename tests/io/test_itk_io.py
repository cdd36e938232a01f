"""NIfTI, NRRD and MetaImage round trips, cross-checked against nibabel and SimpleITK."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medssl.io import InputError, Volume, read_volume, write_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _oblique_volume() -> Volume:
    """A volume with a non-trivial direction (rotated and with a flipped axis)."""
    rng = np.random.default_rng(0)
    theta = np.deg2rad(20)
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    direction = rot @ np.array([[0, 0, 1.0], [0, -1.0, 0], [1.0, 0, 0]])  # y flipped
    return Volume(
        rng.normal(size=(5, 7, 9)).astype(np.float32),
        spacing=(3.0, 0.8, 0.6),
        origin=(12.5, -30.0, 101.0),
        direction=direction,
    )


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_round_trip_preserves_geometry(tmp_path, suffix):
    vol = _oblique_volume()
    path = write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(path)
    np.testing.assert_allclose(back.array, vol.array, rtol=0, atol=0)
    assert back.same_grid(vol)
    # SimpleITK's own view of the file agrees with the Volume convention
    image = sitk.ReadImage(str(path))
    assert np.allclose(image.GetSpacing(), vol.spacing[::-1])
    assert np.allclose(
        image.TransformIndexToPhysicalPoint((8, 6, 4)), vol.index_to_physical([4, 6, 8])
    )


def test_nifti_affine_matches_nibabel(tmp_path):
    vol = _oblique_volume()
    path = write_volume(vol, tmp_path / "v.nii.gz")
    img = nib.load(path)
    # nibabel indexes (i, j, k) = (x, y, z) and maps to RAS
    for idx in ([0, 0, 0], [4, 6, 8], [2, 3, 1]):
        ras = img.affine @ np.array([idx[2], idx[1], idx[0], 1.0])
        np.testing.assert_allclose(LPS_TO_RAS @ ras[:3], vol.index_to_physical(idx), atol=1e-4)
    np.testing.assert_allclose(np.asarray(img.dataobj).transpose(2, 1, 0), vol.array, atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_lesion_voxel_lands_on_the_same_physical_point(sample, tmp_path, suffix):
    """lung1's tumour label: after writing and re-reading, the lesion centre is the same
    physical point, checked with nibabel for NIfTI and SimpleITK for NRRD."""
    label_path = sample("lung1").parent / "lung1_label.nrrd"
    label = read_volume(label_path)
    idx = np.argwhere(label.array > 0)
    assert len(idx) == 837  # docs/data.md: 837 lesion voxels
    centre_idx = idx[len(idx) // 2]
    point = label.index_to_physical(centre_idx)
    out = write_volume(label, tmp_path / f"label{suffix}", dtype=np.uint8)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, label.array)
    np.testing.assert_allclose(back.index_to_physical(centre_idx), point, atol=1e-4)
    if suffix == ".nii.gz":
        img = nib.load(out)
        assert img.get_data_dtype() == np.uint8
        ijk = np.round(np.linalg.inv(img.affine) @ np.r_[LPS_TO_RAS @ point, 1.0])[:3].astype(int)
        assert np.asarray(img.dataobj)[tuple(ijk)] == 1
        np.testing.assert_array_equal(ijk, centre_idx[::-1])
    else:
        image = sitk.ReadImage(str(out))
        ijk = image.TransformPhysicalPointToIndex(tuple(point))
        assert image[ijk] == 1


def test_mhd_header_and_data_written_together(tmp_path):
    vol = _oblique_volume()
    write_volume(vol, tmp_path / "v.mhd")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["v.mhd", "v.raw"]
    assert read_volume(tmp_path / "v.mhd").same_grid(vol)


def test_2d_image_becomes_one_slice(tmp_path):
    image = sitk.GetImageFromArray(np.arange(12, dtype=np.float32).reshape(3, 4))
    image.SetSpacing((0.5, 0.25))
    sitk.WriteImage(image, str(tmp_path / "slice.nrrd"))
    vol = read_volume(tmp_path / "slice.nrrd")
    assert vol.shape == (1, 3, 4)
    assert vol.spacing[1:] == (0.25, 0.5)


def test_vector_and_4d_images_are_refused(tmp_path):
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="components per voxel"):
        read_volume(tmp_path / "rgb.nrrd")
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(InputError, match="4D"):
        read_volume(tmp_path / "4d.nii")


def test_truncated_nifti_is_a_clear_error(tmp_path):
    vol = _oblique_volume()
    path = write_volume(vol, tmp_path / "v.nii")
    data = path.read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 2])
    gz = write_volume(vol, tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(gz[: len(gz) * 2 // 3])
    with pytest.raises(InputError, match="truncated"):
        read_volume(tmp_path / "cut.nii.gz")
    with pytest.raises(InputError) as info:
        read_volume(tmp_path / "cut.nii")
    assert "cut.nii" in str(info.value)


def test_itk_errors_say_why_without_itk_internals(tmp_path):
    bad = tmp_path / "hdr.nrrd"
    bad.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n")
    with pytest.raises(InputError) as info:
        read_volume(bad)
    msg = str(info.value)
    assert "cannot read the image header" in msg and "endian" in msg
    assert ".cxx" not in msg and "0x" not in msg and "Exception thrown" not in msg
    junk = tmp_path / "junk.nii.gz"
    junk.write_text("not an image")
    with pytest.raises(InputError) as info:
        read_volume(junk)
    assert ".cxx" not in str(info.value) and "junk.nii.gz" in str(info.value)
