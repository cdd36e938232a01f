"""`medssl denoise`: DICOM in and out, NIfTI, sigma maps, strength, ROI, saved models, bad
input."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medssl.io import read_volume, write_dicom_series, write_volume
from tests.denoise.phantom import phantom

FAST = ["--steps", "10", "--threads", "1"]


@pytest.fixture
def ct_nifti(tmp_path):
    vol, _ = phantom((3, 40, 44))
    return write_volume(vol, tmp_path / "ct.nii.gz")


@pytest.fixture
def ct_dicom(tmp_path):
    vol, _ = phantom((3, 40, 44))
    write_dicom_series(vol, tmp_path / "ct_series")
    return tmp_path / "ct_series"


def test_nifti_in_nifti_out_with_sigma_maps_and_model(medssl, ct_nifti, tmp_path):
    r = medssl(
        "denoise",
        ct_nifti,
        "-o",
        tmp_path / "out.nii.gz",
        "--sigma-maps",
        tmp_path / "maps",
        "--save-model",
        tmp_path / "m.pt",
        *FAST,
    )
    assert r.code == 0, r.output
    src, out = read_volume(ct_nifti), read_volume(tmp_path / "out.nii.gz")
    assert out.same_grid(src)
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert "stage0_sigma_range_hu.nii.gz" in names and "stage1_overlay.png" in names
    assert "stage0_sigma_x_mm.nii.gz" in names
    sx = read_volume(tmp_path / "maps" / "stage0_sigma_x_mm.nii.gz")
    assert sx.same_grid(src) and (sx.array > 0).all() and (sx.array <= 3 * 0.7 + 1e-4).all()
    # re-apply the saved model: same output, no fitting (same thread count: CPU convolutions
    # reduce in a thread-dependent order, so other counts differ in the last float bit)
    again = tmp_path / "again.nii.gz"
    r = medssl("denoise", ct_nifti, "-o", again, "--model", tmp_path / "m.pt", "--threads", "1")
    assert r.code == 0, r.output
    assert "fitted" not in r.stdout
    np.testing.assert_array_equal(read_volume(again).array, out.array)


def test_dicom_series_in_derived_series_out(medssl, ct_dicom, tmp_path):
    r = medssl("denoise", ct_dicom, "-o", tmp_path / "den", *FAST)
    assert r.code == 0, r.output
    src = pydicom.dcmread(sorted(ct_dicom.glob("*.dcm"))[0])
    files = sorted((tmp_path / "den").glob("*.dcm"))
    assert len(files) == 3
    ds = pydicom.dcmread(files[0])
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert "Filter2Noise" in ds.DerivationDescription
    assert read_volume(tmp_path / "den").same_grid(read_volume(ct_dicom))


def test_strength_zero_and_roi(medssl, ct_nifti, tmp_path):
    r = medssl("denoise", ct_nifti, "-o", tmp_path / "s0.nii.gz", "--strength", "0", *FAST)
    assert r.code == 0, r.output
    np.testing.assert_array_equal(
        read_volume(tmp_path / "s0.nii.gz").array, read_volume(ct_nifti).array
    )
    r = medssl(
        "denoise",
        ct_nifti,
        "-o",
        tmp_path / "roi.nii.gz",
        "--roi",
        "0:3,10:30,5:25",
        "--roi-factor",
        "0",
        *FAST,
    )
    assert r.code == 0, r.output
    out, src = read_volume(tmp_path / "roi.nii.gz").array, read_volume(ct_nifti).array
    np.testing.assert_allclose(out[:, 10:30, 5:25], src[:, 10:30, 5:25], atol=1e-2)
    assert not np.allclose(out, src)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--strength", "-1"], ">= 0"),
        (["--mode", "4d"], "--mode"),
        (["--preset", "fast"], "unknown preset"),
        (["--roi", "1:1,0:5,0:5"], "holds no voxel"),
        (["--roi", "nope.nii.gz"], "neither a mask file"),
        (["--device", "cuda:7"], "no CUDA device"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(medssl, ct_nifti, tmp_path, args, needle):
    import torch

    if "cuda:7" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = medssl("denoise", ct_nifti, "-o", tmp_path / "o.nii.gz", *FAST, *args)
    assert r.code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o.nii.gz").exists()


def test_non_ct_input_is_refused(medssl, tmp_path):
    vol, _ = phantom((2, 32, 32))
    mr = write_volume(vol.with_array(vol.array / 4000 + 0.5), tmp_path / "mr.nii.gz")
    r = medssl("denoise", mr, "-o", tmp_path / "o.nii.gz", *FAST)
    assert r.code == 2 and "Hounsfield" in r.output
    assert not (tmp_path / "o.nii.gz").exists()


def test_existing_output_and_output_inside_input(medssl, ct_dicom, ct_nifti, tmp_path):
    (tmp_path / "exists.nii.gz").write_bytes(b"x")
    r = medssl("denoise", ct_nifti, "-o", tmp_path / "exists.nii.gz", *FAST)
    assert r.code == 2 and "already exists" in r.output
    r = medssl("denoise", ct_dicom, "-o", ct_dicom / "inside", *FAST)
    assert r.code == 2 and "input" in r.output
    assert not (ct_dicom / "inside").exists()


def test_several_series_need_series_option(medssl, tmp_path):
    a, _ = phantom((2, 32, 32), seed=1)
    write_dicom_series(a, tmp_path / "both" / "a", settings={"a": 1})
    write_dicom_series(a.with_array(a.array + 1), tmp_path / "both" / "b", settings={"b": 1})
    r = medssl("denoise", tmp_path / "both", "-o", tmp_path / "o.nii.gz", *FAST)
    assert r.code == 2 and "--series" in r.output
    r = medssl("denoise", tmp_path / "both", "-o", tmp_path / "o.nii.gz", "--series", "1", *FAST)
    assert r.code == 0, r.output


def test_a_saved_model_enters_the_derived_uids(medssl, ct_dicom, tmp_path):
    """Two different saved models applied to one series give two derived series (the UIDs
    were made from the command's options only, so both got the same SeriesInstanceUID)."""
    uids = []
    for seed in (0, 1):
        model = tmp_path / f"m{seed}.pt"
        r = medssl("denoise", ct_dicom, "-o", tmp_path / f"fit{seed}.nii.gz", "--seed", seed,
                   "--save-model", model, *FAST)  # fmt: skip
        assert r.code == 0, r.output
        r = medssl("denoise", ct_dicom, "-o", tmp_path / f"app{seed}", "--model", model, *FAST)
        assert r.code == 0, r.output
        first = sorted((tmp_path / f"app{seed}").glob("*.dcm"))[0]
        uids.append(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)
    assert uids[0] != uids[1]
