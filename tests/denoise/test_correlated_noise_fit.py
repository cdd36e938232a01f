"""Filter2Noise on correlated noise (smooth reconstruction kernels): the fit takes its noise
level and the edge term's noise share from the scan's noise model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medssl.denoise.filter2noise.api import (
    apply_denoiser,
    denoise_volume,
    dog_noise_std,
    fit_denoiser,
)
from medssl.denoise.filter2noise.config import F2NConfig, preset
from medssl.denoise.filter2noise.loss import dog_kernel
from medssl.denoise.noise_model import estimate_noise_model, soft_tissue_mask
from medssl.io import Volume
from tests.denoise.phantom import fbp_noise
from tests.denoise.test_noise_model import _scan


def test_the_dog_noise_share_follows_the_nps():
    """The DoG response's noise SD predicted from the NPS matches the DoG response of the
    noise itself (filtered directly), for white-like and correlated noise."""
    kernel = dog_kernel(7, 1.0, 2.0)
    for sigma_px in (0.0, 1.5):
        img, noise, clean = _scan(sigma_px, 40.0, 0)
        model = estimate_noise_model(img, (0.7, 0.7))
        direct = ndimage.convolve(noise, kernel.double().numpy(), mode="reflect")
        truth = float(direct[soft_tissue_mask(clean)].std())
        assert dog_noise_std(model, kernel) == pytest.approx(truth, rel=0.15)


def test_models_saved_before_the_noise_model_keep_the_pixel_pair_estimate():
    old = preset("medssl").to_dict()
    del old["fit"]["noise_estimate"]
    assert F2NConfig.from_dict(old).fit.noise_estimate == "pixel_pairs"
    del old["fit"]["texture_guard"], old["fit"]["views"]
    assert F2NConfig.from_dict(old).fit.texture_guard == 0.0  # fitted without the guard
    assert F2NConfig.from_dict(old).fit.views == "pairs"
    assert preset("medssl").fit.noise_estimate == "nps"
    assert preset("published").fit.noise_estimate == "pixel_pairs"
    assert preset("published").fit.edge_noise_floor == 0.0


def _body_with_correlated_noise(n: int = 96, cutoff: float = 0.4, sd: float = 40.0):
    """A body with a dense disc and FBP-like noise of a smooth kernel (Hann-apodised ramp
    cut at 0.4 cycles/pixel)."""
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) / (0.46 * n)) ** 2 + ((xx - n / 2) / (0.46 * n)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    clean[((yy - n / 2) ** 2 + (xx - 0.3 * n) ** 2) < (0.1 * n) ** 2] = 300.0
    noise = fbp_noise((n, n), sd, 5, cutoff)
    noisy = np.maximum(np.rint(clean + noise), -1024.0).astype(np.float32)
    return noisy, clean


def test_the_fit_removes_correlated_noise_that_the_previous_default_kept():
    """Noise correlated over ~1.5 px (a smooth kernel): the default now leaves less of it
    than the previous default (pixel-pair noise level, no edge noise floor)."""
    torch.set_num_threads(1)
    noisy, clean = _body_with_correlated_noise()
    vol = Volume(noisy[None], spacing=(1.0, 0.7, 0.7), modality="CT")
    mask = soft_tissue_mask(clean)
    before = float((noisy - clean)[mask].std())
    fitted = fit_denoiser(vol, preset("medssl"), seed=0)
    assert fitted.meta["noise_model"]["correlation_length_px"] > 1.2  # white: ~0.6
    assert fitted.noise_std_hu == pytest.approx(before, rel=0.2)  # not 3x too low
    new = apply_denoiser(fitted, vol)[0].array[0]
    old_cfg = preset("medssl").with_fit(noise_estimate="pixel_pairs", edge_noise_floor=0.0)
    old = denoise_volume(vol, old_cfg, seed=0).volume.array[0]
    left_new = float((new - clean)[mask].std())
    left_old = float((old - clean)[mask].std())
    assert left_new < 0.85 * left_old, (before, left_old, left_new)
    assert left_new < 0.9 * before


def _textured_body(texture_hu: float, cutoff: float, n: int = 128):
    """A small slice (128², so the noise model measures 16-px patches) whose soft tissue holds
    anatomical-like texture (Gaussian-filtered, 3 px) of ``texture_hu`` RMS, plus FBP noise of
    20 HU; returns the slice and the true noise SD in soft tissue."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) / (0.46 * n)) ** 2 + ((xx - n / 2) / (0.46 * n)) ** 2 < 1
    texture = ndimage.gaussian_filter(rng.normal(size=(n, n)), 3.0)
    texture *= texture_hu / texture.std()
    noise = fbp_noise((n, n), 20.0, 2, cutoff)
    noisy = np.maximum(np.rint(np.where(body, 40.0 + texture, -1000.0) + noise), -1024.0)
    true_sd = float(noise[soft_tissue_mask(np.where(body, 40.0, -1000.0))].std())
    return noisy.astype(np.float32), true_sd


@pytest.mark.parametrize("cutoff", [0.75, 0.5])
def test_the_texture_guard_keeps_texture_out_of_the_fits_noise_level(cutoff):
    """Texture that the noise model reads as noise (1.7x the true SD here) is held back by
    the guard; on texture-free FBP noise the guard changes nothing."""
    cfg = preset("medssl").with_fit(steps=2)
    clean_img, true_sd = _textured_body(0.0, cutoff)
    fitted = fit_denoiser(Volume(clean_img[None], spacing=(1.0, 0.7, 0.7)), cfg, seed=0)
    model_sd = fitted.meta["noise_model"]["sd_hu"]
    assert fitted.meta["noise_level_hu"] == pytest.approx(model_sd, rel=1e-3)
    assert model_sd == pytest.approx(true_sd, rel=0.1)
    img, true_sd = _textured_body(30.0, cutoff)
    fitted = fit_denoiser(Volume(img[None], spacing=(1.0, 0.7, 0.7)), cfg, seed=0)
    assert fitted.meta["noise_model"]["sd_hu"] > 1.5 * true_sd  # texture read as noise
    assert fitted.meta["noise_level_hu"] < 1.35 * true_sd
    off = fit_denoiser(
        Volume(img[None], spacing=(1.0, 0.7, 0.7)), cfg.with_fit(texture_guard=0.0), seed=0
    )
    assert off.meta["noise_level_hu"] > 1.5 * true_sd
