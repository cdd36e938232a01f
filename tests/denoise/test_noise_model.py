"""The noise model for correlated CT noise: SD and correlation length measured in homogeneous
soft tissue, on phantoms with noise of known SD and correlation, stored the way scanners
store CT (integer HU, air clipped at -1024, padding outside the field of view)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medssl.denoise.noise import noise_std_hu
from medssl.denoise.noise_model import estimate_noise_model, soft_tissue_mask


def _correlated_noise(shape, sigma_px: float, sd: float, rng) -> np.ndarray:
    """Gaussian-filtered white noise scaled to ``sd``: its autocorrelation is a Gaussian of
    standard deviation ``sqrt(2) * sigma_px``, so it falls to 1/e at ``2 * sigma_px``."""
    white = rng.normal(size=shape)
    noise = ndimage.gaussian_filter(white, sigma_px) if sigma_px > 0 else white
    # the SD of filtered unit white noise, from the filter's energy (no estimate involved)
    impulse = np.zeros((8 * int(sigma_px + 1) + 1,) * 2)
    impulse[impulse.shape[0] // 2, impulse.shape[1] // 2] = 1.0
    kernel = ndimage.gaussian_filter(impulse, sigma_px) if sigma_px > 0 else impulse
    return noise * (sd / np.sqrt((kernel**2).sum()))


def _scan(sigma_px: float, sd: float, seed: int, n: int = 512):
    """A body ellipse (40 HU) with bone, lung and fat discs; integer HU, air clipped at
    -1024 and the corners outside the field of view padded with -3024."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) / (0.42 * n)) ** 2 + ((xx - n / 2) / (0.45 * n)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    clean[((yy - n / 2) ** 2 + (xx - 0.35 * n) ** 2) < (0.1 * n) ** 2] = 400.0
    clean[((yy - n / 2) ** 2 + (xx - 0.65 * n) ** 2) < (0.1 * n) ** 2] = -800.0
    clean[((yy - 0.3 * n) ** 2 + (xx - 0.5 * n) ** 2) < (0.05 * n) ** 2] = -100.0
    noise = _correlated_noise((n, n), sigma_px, sd, rng)
    img = np.maximum(np.rint(clean + noise), -1024.0)
    img[np.hypot(yy - n / 2, xx - n / 2) > 0.5 * n] = -3024.0
    return img.astype(np.float32), noise, clean


@pytest.mark.parametrize("sigma_px", [1.0, 2.0])
@pytest.mark.parametrize("sd", [20.0, 60.0])
def test_sd_and_correlation_length_of_correlated_noise_within_10_percent(sigma_px, sd):
    for seed in range(2):
        img, noise, clean = _scan(sigma_px, sd, seed)
        model = estimate_noise_model(img, (0.7, 0.7))
        true_sd = float(noise[soft_tissue_mask(clean)].std())  # this draw, in soft tissue
        assert model.sd_hu == pytest.approx(true_sd, rel=0.10), (seed, model.to_dict())
        assert model.correlation_length_px == pytest.approx(2 * sigma_px, rel=0.10)
        assert model.patches >= 20


def test_the_pixel_difference_estimate_it_replaces_is_far_too_low_on_correlated_noise():
    img, noise, clean = _scan(2.0, 40.0, 0)
    true_sd = float(noise[soft_tissue_mask(clean)].std())
    assert noise_std_hu(img) < 0.5 * true_sd  # why this model exists
    assert estimate_noise_model(img, (0.7, 0.7)).sd_hu == pytest.approx(true_sd, rel=0.1)


def test_smoother_noise_has_a_lower_nps_mean_frequency_and_a_longer_correlation():
    fine = estimate_noise_model(_scan(0.7, 40.0, 0)[0], (0.7, 0.7))
    smooth = estimate_noise_model(_scan(2.0, 40.0, 0)[0], (0.7, 0.7))
    assert smooth.mean_frequency < 0.7 * fine.mean_frequency
    assert smooth.correlation_length_mm > 1.5 * fine.correlation_length_mm
    freq, nps = smooth.radial_nps()
    # Parseval: the NPS integrates to the variance
    df = 1.0 / (smooth.patch * 0.7)
    assert (smooth.nps.sum() * df * df) == pytest.approx(smooth.sd_hu**2, rel=0.02)
    assert freq[0] == 0 and nps.shape == freq.shape


def test_a_volume_is_measured_on_its_slices_and_the_psd_keeps_the_variance():
    slices = [_scan(1.5, 30.0, seed)[0] for seed in range(3)]
    model = estimate_noise_model(np.stack(slices), (0.7, 0.7))
    assert model.sd_hu == pytest.approx(30.0, rel=0.1)
    psd = model.psd((64, 80))
    assert psd.shape == (64, 80) and psd.min() >= 0
    assert psd.mean() == pytest.approx(model.sd_hu**2, rel=1e-6)
    summary = model.to_dict()
    assert set(summary) >= {"sd_hu", "correlation_length_mm", "nps_mean_frequency_per_mm"}


def test_fat_muscle_interfaces_do_not_pass_for_noise():
    """A body of fat and muscle layers 36 px thick (as in a chest wall): most large patches
    straddle an interface, whose 150 HU step would pass for noise without the tissue
    classes."""
    rng = np.random.default_rng(3)
    n = 512
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) / (0.45 * n)) ** 2 + ((xx - n / 2) / (0.45 * n)) ** 2 < 1
    layers = np.where((yy // 36) % 2 == 0, -100.0, 50.0)
    clean = np.where(body, layers, -1000.0)
    noise = _correlated_noise((n, n), 1.0, 20.0, rng)
    img = np.maximum(np.rint(clean + noise), -1024.0).astype(np.float32)
    model = estimate_noise_model(img, (0.7, 0.7))
    true_sd = float(noise[soft_tissue_mask(clean)].std())
    assert model.sd_hu == pytest.approx(true_sd, rel=0.10), model.to_dict()
