"""Filter2Noise model: sigma bounds, per-pixel maps, edits, any size, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medssl.denoise.filter2noise import (
    FittedDenoiser,
    SigmaEdit,
    apply_denoiser,
    build_model,
    fit_denoiser,
    load_denoiser,
    preset,
)
from tests.denoise.phantom import phantom

FAST = preset("medssl").with_fit(steps=12, scale_steps=False, crop=32, batch=2)


@pytest.fixture(scope="module")
def fitted():
    vol, clean = phantom()
    return vol, clean, fit_denoiser(vol, FAST, seed=0)


def test_sigmas_are_bounded_and_vary_per_pixel(fitted):
    vol, _, den = fitted
    _, maps = apply_denoiser(den, vol)
    # every range sigma is at least the stated fraction of the scan's noise (HU)
    floor_hu = den.config.model.range_floor_noise * den.noise_std_hu
    assert den.config.model.range_floor_noise == 0.2 and floor_hu > 1.0
    for m in maps:
        assert m.shape == (vol.shape[0], 3, *vol.shape[1:])
        assert (m[:, :2] > 0).all() and (m[:, :2] <= 3.0 + 1e-5).all()
        assert (m[:, 2] >= floor_hu * (1 - 1e-4)).all() and (m[:, 2] <= 1000.0 + 1e-3).all()
    # per-pixel maps: not constant over the image
    assert float(np.std(maps[0][:, 2])) > 1e-3


@pytest.mark.parametrize("shape", [(1, 37, 53), (2, 17, 16), (1, 128, 9)])
def test_any_image_size(shape):
    vol, _ = phantom(shape)
    den = fit_denoiser(vol, FAST.with_fit(steps=2), seed=0)
    out, _ = apply_denoiser(den, vol)
    assert out.shape == vol.shape and out.same_grid(vol)
    assert np.isfinite(out.array).all()


def test_strength_zero_returns_the_input_unchanged(fitted):
    vol, _, den = fitted
    out, _ = apply_denoiser(den, vol, edit=SigmaEdit(strength=0.0))
    np.testing.assert_array_equal(out.array, vol.array)


def test_roi_factor_smooths_more_inside_only(fitted):
    vol, _, den = fitted
    base, _ = apply_denoiser(den, vol)
    roi = torch.zeros(vol.shape, dtype=torch.bool)
    roi[:, 10:38, 8:30] = True
    strong, maps = apply_denoiser(den, vol, edit=SigmaEdit(1.0, roi, 3.0))
    inside = roi.numpy()
    lap = lambda a: np.abs(np.diff(a, axis=-1)).mean()  # noqa: E731  roughness
    assert lap(strong.array[:, 10:38, 8:30]) < lap(base.array[:, 10:38, 8:30])
    # far from the region (beyond the window and the predictor's reach) nothing changes
    np.testing.assert_allclose(strong.array[:, :, 48:], base.array[:, :, 48:], atol=1e-3)
    # the edited maps are larger inside, bounded everywhere
    _, base_maps = apply_denoiser(den, vol)
    assert maps[0][:, 2][inside].mean() > base_maps[0][:, 2][inside].mean()
    weak, _ = apply_denoiser(den, vol, edit=SigmaEdit(1.0, roi, 0.0))
    np.testing.assert_allclose(weak.array[inside], vol.array[inside], atol=1e-3)


def test_fit_is_deterministic_given_the_seed():
    vol, _ = phantom((2, 32, 32))
    a = apply_denoiser(fit_denoiser(vol, FAST, seed=3), vol)[0].array
    b = apply_denoiser(fit_denoiser(vol, FAST, seed=3), vol)[0].array
    c = apply_denoiser(fit_denoiser(vol, FAST, seed=4), vol)[0].array
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_saved_model_reapplies_identically(fitted, tmp_path):
    vol, _, den = fitted
    path = den.save(tmp_path / "f2n.pt")
    again = load_denoiser(path)
    assert isinstance(again, FittedDenoiser) and again.config == den.config
    np.testing.assert_array_equal(
        apply_denoiser(again, vol)[0].array, apply_denoiser(den, vol)[0].array
    )


def test_denoising_reduces_error_on_the_phantom(fitted):
    vol, clean, den = fitted
    out, _ = apply_denoiser(den, vol)
    assert np.abs(out.array - clean).mean() < 0.8 * np.abs(vol.array - clean).mean()


def test_outside_fov_padding_is_restored():
    vol, _ = phantom((1, 40, 40), fov_padding=True)
    den = fit_denoiser(vol, FAST.with_fit(steps=2), seed=0)
    out, _ = apply_denoiser(den, vol)
    pad = vol.array == -2000
    assert pad.any()
    np.testing.assert_array_equal(out.array[pad], vol.array[pad])


@pytest.mark.parametrize("name", ["published", "global"])
def test_other_presets_build_and_run(name):
    vol, _ = phantom((1, 32, 40))
    cfg = preset(name).with_fit(steps=2, scale_steps=False)
    out, maps = apply_denoiser(fit_denoiser(vol, cfg, seed=0), vol)
    assert out.shape == vol.shape and len(maps) == 2


def test_3d_mode_filters_with_sigma_z():
    vol, _ = phantom((6, 32, 32))
    cfg = FAST.with_model(nd=3).with_fit(crop_depth=4)
    den = fit_denoiser(vol, cfg, seed=0)
    out, maps = apply_denoiser(den, vol)
    assert out.shape == vol.shape
    assert maps[0].shape == (6, 4, 32, 32)  # sigma_z, sigma_y, sigma_x, range
    assert (maps[0][:, 0] <= 1.0 + 1e-5).all()  # sigma_z bound


def test_3d_sigma_z_bound_follows_the_slice_spacing():
    """Thick slices: sigma_z reaches no further in mm than the in-plane sigmas (3 px here)."""
    vol, _ = phantom((4, 32, 32))
    thick = dataclasses.replace(vol, spacing=(5.0, 0.5, 0.5))
    cfg = FAST.with_model(nd=3).with_fit(steps=2, crop_depth=4)
    den = fit_denoiser(thick, cfg, seed=0)
    assert den.config.model.sigma_max_z == pytest.approx(3.0 * 0.5 / 5.0)
    _, maps = apply_denoiser(den, thick)
    assert (maps[0][:, 0] <= 0.3 + 1e-5).all()
    thin = dataclasses.replace(vol, spacing=(0.5, 0.5, 0.5))
    assert fit_denoiser(thin, cfg, seed=0).config.model.sigma_max_z == 1.0


def test_initial_sigmas_leave_room_to_learn():
    """Every spatial sigma starts at most at half its bound, where the bounded head still has
    a gradient (sigma_z has a bound of 1 voxel and an initial value of 1 would saturate)."""
    model = build_model(preset("medssl").model.__class__(nd=3))
    stage = model.stages[0]
    bias = stage.bias.detach().clone().requires_grad_(True)
    sig = torch.sigmoid(bias) * stage.bounds
    assert sig[0].item() == pytest.approx(0.5, rel=1e-4)  # sigma_z: half of 1 voxel
    assert sig[1].item() == pytest.approx(1.0, rel=1e-4)  # in-plane: init_spatial
    sig[0].backward()
    assert bias.grad[0].item() > 0.2


def test_model_builder_refuses_unknown_predictor():
    with pytest.raises(ValueError, match="unknown predictor"):
        build_model(FAST.model.__class__(predictor="transformer"))


def test_fitting_steps_scale_with_the_slice_size():
    cfg = preset("medssl")
    assert cfg.fit.steps == 100
    assert cfg.steps_for(512, 512) == 100 and cfg.steps_for(1024, 768) == 100
    assert cfg.steps_for(384, 384) == 75
    assert cfg.steps_for(256, 256) == 50 and cfg.steps_for(128, 128) == 50
    assert cfg.with_fit(scale_steps=False).steps_for(128, 128) == 100
    assert preset("published").steps_for(128, 128) == 500
    vol, _ = phantom(shape=(1, 40, 40))
    den = fit_denoiser(vol, cfg.with_fit(steps=4, crop=16, batch=1), seed=0)
    assert den.report is not None and den.report.steps == 2 and den.config.fit.steps == 2


def test_first_stage_ranges_on_a_smoothed_guide():
    """medssl's first stage is a joint bilateral filter on a Gaussian-smoothed guide; the
    published preset and later stages filter on their own input."""
    model = build_model(preset("medssl").model)
    assert [s.guide_sigma for s in model.stages] == [1.0, 0.0]
    assert all(s.guide_sigma == 0 for s in build_model(preset("published").model).stages)
    # flat noisy image, range sigma = the noise std: single noisy pixels differ by ~1.4 std,
    # so the plain filter keeps much of the noise; the guide's differences are far smaller
    gen = torch.Generator().manual_seed(0)
    x = 0.05 * torch.randn(1, 1, 96, 96, generator=gen)
    stage = model.stages[0]
    with torch.no_grad():
        stage.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))  # sigmoid(0): half of each bound
        stage.set_initial_range(0.05)
        guided, _ = stage(x)
        stage.guide_sigma = 0.0
        plain, _ = stage(x)
    assert guided.std() < 0.6 * plain.std()


def test_models_saved_before_the_guide_load_without_it(fitted, tmp_path):
    _, _, den = fitted
    path = den.save(tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    del payload["config"]["model"]["guide_sigma"]  # what an older medssl wrote
    torch.save(payload, path)
    old = load_denoiser(path)
    assert old.config.model.guide_sigma == 0.0
    assert old.model.stages[0].guide_sigma == 0.0
