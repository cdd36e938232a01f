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
from tests.denoise.test_noise_model import _correlated_noise, _scan


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
    assert preset("medssl").fit.noise_estimate == "nps"
    assert preset("published").fit.noise_estimate == "pixel_pairs"
    assert preset("published").fit.edge_noise_floor == 0.0


def _body_with_correlated_noise(n: int = 96, sigma_px: float = 1.5, sd: float = 40.0):
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) / (0.46 * n)) ** 2 + ((xx - n / 2) / (0.46 * n)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    clean[((yy - n / 2) ** 2 + (xx - 0.3 * n) ** 2) < (0.1 * n) ** 2] = 300.0
    noise = _correlated_noise((n, n), sigma_px, sd, rng)
    noisy = np.maximum(np.rint(clean + noise), -1024.0).astype(np.float32)
    return noisy, clean


def test_the_fit_removes_correlated_noise_that_the_previous_default_kept():
    """Noise correlated over ~3 px (a smooth kernel): the default now leaves less of it
    than the previous default (pixel-pair noise level, no edge noise floor)."""
    torch.set_num_threads(1)
    noisy, clean = _body_with_correlated_noise()
    vol = Volume(noisy[None], spacing=(1.0, 0.7, 0.7), modality="CT")
    mask = soft_tissue_mask(clean)
    before = float((noisy - clean)[mask].std())
    fitted = fit_denoiser(vol, preset("medssl"), seed=0)
    assert fitted.meta["noise_model"]["correlation_length_px"] > 2.0
    assert fitted.noise_std_hu == pytest.approx(before, rel=0.2)  # not 3x too low
    new = apply_denoiser(fitted, vol)[0].array[0]
    old_cfg = preset("medssl").with_fit(noise_estimate="pixel_pairs", edge_noise_floor=0.0)
    old = denoise_volume(vol, old_cfg, seed=0).volume.array[0]
    left_new = float((new - clean)[mask].std())
    left_old = float((old - clean)[mask].std())
    assert left_new < 0.85 * left_old, (before, left_old, left_new)
    assert left_new < 0.9 * before
