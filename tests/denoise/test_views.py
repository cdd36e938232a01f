"""The training views under correlated noise: the pixel-pair split of a smooth kernel's noise
gives two views that share most of their noise; the whitened split gives independent noise
with the same anatomy below half the Nyquist frequency."""

from __future__ import annotations

import numpy as np
import torch

from medssl.denoise.filter2noise.api import VIEW_PAD, training_views
from medssl.denoise.filter2noise.sampling import (
    decorrelated_views,
    pair_downsample,
    whitening_gain,
)
from medssl.denoise.noise_model import estimate_noise_model, soft_tissue_mask
from tests.denoise.phantom import fbp_noise, fbp_nps


def _corr(a: torch.Tensor, b: torch.Tensor, mask: np.ndarray | None = None) -> float:
    a, b = a.reshape(-1).numpy(), b.reshape(-1).numpy()
    if mask is not None:
        a, b = a[mask.reshape(-1)], b[mask.reshape(-1)]
    return float(np.corrcoef(a, b)[0, 1])


def test_the_pair_split_of_correlated_noise_shares_noise_and_the_whitened_split_does_not():
    n = 256
    noise = torch.from_numpy(fbp_noise((n, n), 40.0, 0)).float()[None, None]
    plain = pair_downsample(noise)
    assert _corr(*plain) > 0.4  # the published split: the views share half their noise
    psd = torch.from_numpy(fbp_nps((n + 2 * VIEW_PAD,) * 2))
    views = decorrelated_views(noise, whitening_gain(psd, 8.0), VIEW_PAD)
    assert abs(_corr(*views)) < 0.1
    assert views[0].shape == plain[0].shape


def test_the_whitened_views_keep_the_anatomy_of_the_plain_split():
    """A smooth image (no noise): the whitened views equal the plain split's (to 1 % of the
    contrast), and a gain of 1 everywhere gives the plain split exactly."""
    n = 128
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    smooth = 100.0 * np.exp(-((yy - 60) ** 2 + (xx - 70) ** 2) / (2 * 12.0**2))
    img = torch.from_numpy(smooth).float()[None, None]
    psd = torch.from_numpy(fbp_nps((n + 2 * VIEW_PAD,) * 2))
    got = decorrelated_views(img, whitening_gain(psd, 4.0), VIEW_PAD)
    want = pair_downsample(img)
    for g, w in zip(got, want, strict=True):
        assert float((g - w).abs().max()) < 1.0
    ones = torch.ones(n + 2 * VIEW_PAD, n + 2 * VIEW_PAD)
    for g, w in zip(decorrelated_views(img, ones, VIEW_PAD), want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=0)


def test_views_from_the_scans_own_noise_model_are_decorrelated():
    """End to end as the fit does it: the NPS estimated from the scan (body, bone and lung
    discs, clipped air, padded field of view) whitens its noise well enough that the two
    views' noise is nearly uncorrelated inside the body."""
    n = 256
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) / (0.42 * n)) ** 2 + ((xx - n / 2) / (0.45 * n)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    clean[((yy - n / 2) ** 2 + (xx - 0.35 * n) ** 2) < (0.1 * n) ** 2] = 400.0
    clean[((yy - n / 2) ** 2 + (xx - 0.65 * n) ** 2) < (0.1 * n) ** 2] = -800.0
    noise = fbp_noise((n, n), 40.0, 1)
    img = np.maximum(np.rint(clean + noise), -1024.0)
    img[np.hypot(yy - n / 2, xx - n / 2) > 0.5 * n] = -3024.0
    model = estimate_noise_model(img.astype(np.float32), (0.7, 0.7))
    noise_views = training_views(
        [torch.from_numpy(noise).float()[None, None]], model, max_gain=8.0
    )[0]
    inside = pair_downsample(torch.from_numpy(soft_tissue_mask(clean)).float()[None, None])
    mask = (inside[0] > 0.99).numpy()
    plain = pair_downsample(torch.from_numpy(noise).float()[None, None])
    assert _corr(*plain, mask) > 0.4
    assert abs(_corr(*noise_views, mask)) < 0.15


def test_crops_of_precomputed_views_match_the_crops_of_the_image():
    """Training on precomputed whole-image views: each crop's views are the views of that
    crop (crops start at even pixels), for slices and volumes."""
    from medssl.denoise.filter2noise.config import FitConfig
    from medssl.denoise.filter2noise.fit import _crops

    gen = torch.Generator().manual_seed(3)
    for shape in ((1, 1, 70, 90), (1, 1, 6, 70, 90)):
        img = torch.randn(shape)
        views = [pair_downsample(img)]
        cfg = FitConfig(crop=32, batch=6, crop_depth=4)
        y, _, (v1, v2) = _crops([img], [None], cfg, gen, views)
        w1, w2 = pair_downsample(y)
        torch.testing.assert_close(v1, w1)
        torch.testing.assert_close(v2, w2)


def test_a_fit_with_whitened_views_runs_and_denoises():
    """The ``views = "whitened"`` option end to end on a small correlated-noise slice."""
    from medssl.denoise.filter2noise.api import denoise_volume
    from medssl.denoise.filter2noise.config import preset
    from medssl.io import Volume

    torch.set_num_threads(1)
    n = 96
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) / (0.45 * n)) ** 2 + ((xx - n / 2) / (0.45 * n)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    noisy = np.maximum(np.rint(clean + fbp_noise((n, n), 40.0, 2)), -1024.0).astype(np.float32)
    cfg = preset("medssl").with_fit(views="whitened", steps=20)
    out = denoise_volume(Volume(noisy[None], spacing=(1.0, 0.7, 0.7)), cfg, seed=0)
    inside = soft_tissue_mask(clean)
    assert np.isfinite(out.volume.array).all()
    assert out.volume.array[0][inside].std() < 0.8 * noisy[inside].std()
