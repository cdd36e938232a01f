"""Baselines and metrics of the LDCT benchmark: Gaussian oracle search, ZS-N2N, PSNR/SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medssl.denoise.baselines.gaussian import gaussian_denoise, oracle_search
from medssl.denoise.baselines.zsn2n import zsn2n_denoise
from medssl.denoise.metrics import SOFT_TISSUE_WINDOW, psnr, ssim, window
from tests.denoise.phantom import phantom


def test_window_and_psnr_use_fixed_hu_windows():
    hu = np.array([-3000.0, -1000.0, 0.0, 1000.0, 3000.0])
    assert np.allclose(window(hu), [0, 0, 0.5, 1, 1])
    ref = np.zeros((8, 8))
    assert psnr(ref, ref) == math.inf
    # an error of 20 HU is 0.01 of the 2000 HU window: 40 dB; 0.05 of the soft-tissue window
    assert psnr(ref + 20, ref) == pytest.approx(40.0)
    assert psnr(ref + 20, ref, SOFT_TISSUE_WINDOW) == pytest.approx(20 * math.log10(400 / 20))
    # clipping: values beyond the window do not count
    assert psnr(np.full((8, 8), 1500.0), np.full((8, 8), 1200.0)) == math.inf


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    vol, clean = phantom(shape=(1, 48, 56))
    assert ssim(clean[0], clean[0]) == pytest.approx(1.0)
    assert ssim(vol.array[0], clean[0]) < 0.9


def test_oracle_search_finds_the_maximum_of_a_unimodal_score():
    calls = []

    def score(p: float) -> float:
        calls.append(p)
        return -((math.log(p) - math.log(1.7)) ** 2)

    best, value = oracle_search(score, 0.2, 6.0)
    assert best == pytest.approx(1.7, rel=0.03)
    assert value <= 0 and len(calls) == 9 + 2 + 8


def test_gaussian_oracle_beats_no_smoothing_and_oversmoothing():
    vol, clean = phantom(shape=(1, 48, 56), noise_hu=200.0)
    noisy = vol.array[0]
    best, value = oracle_search(lambda s: psnr(gaussian_denoise(noisy, s), clean[0]), 0.2, 6.0)
    assert 0.2 < best < 6.0
    assert value > psnr(noisy, clean[0]) + 1
    assert value > psnr(gaussian_denoise(noisy, 6.0), clean[0])


def test_zsn2n_reduces_the_error_and_keeps_the_shape():
    vol, clean = phantom(shape=(1, 47, 56), noise_hu=120.0)  # odd size: padded and cropped back
    x = torch.from_numpy(vol.array[0] / 1000.0)
    out = zsn2n_denoise(x, steps=150, seed=0).numpy() * 1000.0
    assert out.shape == x.shape
    # correlated noise: ZS-N2N (white-noise assumption) gains little, but it must gain
    assert psnr(out, clean[0]) > psnr(vol.array[0], clean[0]) + 0.2
    again = zsn2n_denoise(x, steps=150, seed=0).numpy() * 1000.0
    assert np.array_equal(out, again)
