"""Physicist's image-quality measures of a denoised CT against its input: on a phantom with
noise of known correlation and edges of known blur, a Gaussian blur of known sigma must show
the noise reduction, NPS shift and edge growth that the blur's kernel predicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from medssl.denoise.noise_model import estimate_noise_model
from medssl.denoise.physics import (
    edge_sites,
    field_of_view,
    noise_patches,
    quality_report,
)

PIXEL = 0.7  # mm
EDGE_SIGMA = 1.0  # px: the phantom's edges are a step blurred by this Gaussian
NOISE_SIGMA = 0.7  # px: the noise is white noise blurred by this Gaussian
RISE_10_90 = 2 * 1.2815516  # 10-90 % rise of a Gaussian-blurred step, in its sigmas


def _scene(
    n: int = 200,
    seed: int = 0,
    noise_sd: float = 40.0,
    pad: float | None = None,
    edge_sigma: float = EDGE_SIGMA,
):
    """A body ellipse (40 HU) in air with a bone disc (1000 HU) and a lung disc (-800 HU), its
    edges a step blurred by ``edge_sigma`` pixels, plus correlated noise; outside a circle the field
    of view is padded with ``pad`` when given. Returns ``(image, clean, noise)``."""
    yy, xx = np.mgrid[:n, :n].astype(float)
    c = n / 2
    body = ((yy - c) / (0.36 * n)) ** 2 + ((xx - c) / (0.40 * n)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    clean[np.hypot(yy - c, xx - 0.33 * n) < 0.13 * n] = 1000.0
    clean[np.hypot(yy - c, xx - 0.67 * n) < 0.13 * n] = -800.0
    clean = ndimage.gaussian_filter(clean, edge_sigma)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(n, n)), NOISE_SIGMA)
    noise *= noise_sd / noise.std()
    image = clean + noise
    if pad is not None:
        image[np.hypot(yy - c, xx - c) > 0.49 * n] = pad
    return image.astype(np.float32), clean, noise


def _kernel_energy(*sigmas: float) -> float:
    """The square root of the energy of cascaded Gaussian filters (an impulse response, no
    estimate involved): the factor they scale white noise's SD by."""
    impulse = np.zeros((61, 61))
    impulse[30, 30] = 1.0
    for s in sigmas:
        impulse = ndimage.gaussian_filter(impulse, s)
    return float(np.sqrt((impulse**2).sum()))


def test_a_known_blur_lowers_the_noise_sd_as_its_kernel_predicts():
    image, _, _ = _scene()
    blur = 1.5
    q = quality_report(image, ndimage.gaussian_filter(image, blur), (PIXEL, PIXEL))
    expected = 1 - _kernel_energy(NOISE_SIGMA, blur) / _kernel_energy(NOISE_SIGMA)
    assert q.noise_sd_reduction == pytest.approx(expected, rel=0.10), q.to_dict()
    # the input is measured in the very patches the noise model picks
    assert q.noise_before.sd_hu == pytest.approx(estimate_noise_model(image, (PIXEL,) * 2).sd_hu)
    assert q.noise_before.patches >= 20


def test_a_blur_moves_the_nps_to_low_frequencies():
    image, _, _ = _scene()
    q = quality_report(image, ndimage.gaussian_filter(image, 1.5), (PIXEL, PIXEL))
    assert q.nps_mean_frequency_shift < -0.3, q.to_dict()
    freq, before = q.noise_before.radial_nps()
    _, after = q.noise_after.radial_nps()
    high = freq > 0.5 / (2 * PIXEL)  # the upper half up to Nyquist
    assert after[high].sum() < 0.1 * before[high].sum()


def test_a_known_blur_of_a_known_step_widens_the_edge_as_predicted():
    image, _, _ = _scene()
    blur = 1.5
    q = quality_report(image, ndimage.gaussian_filter(image, blur), (PIXEL, PIXEL))
    before = RISE_10_90 * EDGE_SIGMA * PIXEL
    after = RISE_10_90 * math.hypot(EDGE_SIGMA, blur) * PIXEL
    assert q.edge_sites >= 100
    assert q.edge_width_before_mm == pytest.approx(before, rel=0.10), q.to_dict()
    assert q.edge_width_after_mm == pytest.approx(after, rel=0.10), q.to_dict()
    assert q.edge_width_growth == pytest.approx(after / before - 1, rel=0.10)


@pytest.mark.parametrize("edge_sigma", [1.0, 1.5])
def test_a_nearly_noise_free_edge_has_the_exact_rise_distance(edge_sigma):
    """Profiles aligned at each edge's sub-pixel position: without the alignment the pixel
    grid's phase adds about a twelfth of a pixel squared to the ESF's variance."""
    image, _, _ = _scene(noise_sd=5.0, edge_sigma=edge_sigma)
    q = quality_report(image, image, (PIXEL, PIXEL))
    assert q.edge_width_before_mm == pytest.approx(RISE_10_90 * edge_sigma * PIXEL, rel=0.03)


def test_the_identity_changes_nothing():
    image, _, _ = _scene()
    d = quality_report(image, image.copy(), (PIXEL, PIXEL)).to_dict()
    assert d["noise_sd_reduction"] == 0.0
    assert d["nps_mean_frequency_shift"] == 0.0
    assert d["edge_width_growth"] == 0.0
    assert d["edge_sites"] > 0 and d["edge_width_before_mm"] > 0
    json.dumps(d, allow_nan=False)  # JSON-ready
    # an output that differs by rounding errors only reads 0, not -0
    d = quality_report(image, image * np.float32(1 + 1e-6), (PIXEL, PIXEL)).to_dict()
    assert "-0.0," not in json.dumps(d) and d["noise_sd_reduction"] == 0.0


def test_the_output_is_measured_in_the_patches_chosen_on_the_input():
    """A denoiser that halves the noise in the left half of the body only: the patches are
    those of the input, half of them now quieter; a choice made on the output would pick one
    half (the mode of its patch variances) and report no change or a halving."""
    image, clean, noise = _scene()
    after = image.copy()
    left = np.zeros(image.shape, bool)
    left[:, : image.shape[1] // 2] = True
    after[left] = (clean + 0.5 * noise)[left]
    q = quality_report(image, after, (PIXEL, PIXEL))
    patches = noise_patches(image)
    factor = np.where(left, 0.25, 1.0)  # the output's noise variance over the input's
    mean_factor = np.mean(
        [
            factor[y : y + patches.patch, x : x + patches.patch].mean()
            for y, x in zip(patches.y, patches.x, strict=True)
        ]
    )
    assert 0.3 < mean_factor < 0.9  # both halves hold patches
    assert q.noise_after.sd_hu / q.noise_before.sd_hu == pytest.approx(
        math.sqrt(mean_factor), rel=0.05
    ), q.to_dict()


@pytest.mark.parametrize("pad", [-2000.0, 0.0, "resampled -3024"])
def test_edges_at_the_field_of_view_padding_are_not_used(pad):
    """The air/padding border is the sharpest, straightest and strongest edge of the image:
    it must not be mistaken for the scanner's resolution. Padding is one value (-2000, or 0
    HU, above air), or far below air but not constant (resampled)."""
    if isinstance(pad, str):
        image, _, _ = _scene(pad=-3024.0)
        outside = image == -3024.0
        image[outside] += np.random.default_rng(1).normal(0.0, 5.0, outside.sum())
    else:
        image, _, _ = _scene(pad=pad)
    n = image.shape[0]
    fov = field_of_view(image)
    assert not fov[0, 0] and fov[n // 2, n // 2] and fov[n // 2, 8]  # air is in the FOV
    sites = edge_sites(image, (PIXEL, PIXEL))
    radius = np.hypot(sites.y - n / 2, sites.x - n / 2)
    assert len(sites) >= 100 and radius.max() < 0.49 * n - 8, radius.max()
    q = quality_report(image, ndimage.gaussian_filter(image, 1.5), (PIXEL, PIXEL))
    assert q.edge_width_before_mm == pytest.approx(RISE_10_90 * EDGE_SIGMA * PIXEL, rel=0.10)


def test_air_clipped_at_minus_1024_keeps_the_body_outline():
    """Scanners clip air at -1024 and may pad with the same value: that is no padding to
    exclude (air and padding meet without an edge), and the body/air edges stay in use. Here
    air reconstructs at -1040, so most of it is clipped and touches the padding."""
    image, clean, _ = _scene(noise_sd=20.0)
    image = np.where(clean < -990.0, image - 40.0, image)
    image = np.maximum(np.rint(image), -1024.0)
    n = image.shape[0]
    yy, xx = np.mgrid[:n, :n]
    image[np.hypot(yy - n / 2, xx - n / 2) > 0.49 * n] = -1024.0
    assert field_of_view(image).all()
    sites = edge_sites(image, (PIXEL, PIXEL))
    outline = np.hypot((sites.y - n / 2) / (0.36 * n), (sites.x - n / 2) / (0.40 * n))
    assert (np.abs(outline - 1) < 0.05).sum() >= 30


def test_a_volume_is_measured_on_its_slices_and_shapes_are_checked():
    vol = np.stack([_scene(seed=s)[0] for s in range(3)])
    out = ndimage.gaussian_filter(vol, (0, 1.5, 1.5))
    q = quality_report(vol, out, (PIXEL, PIXEL))
    sites = edge_sites(vol, (PIXEL, PIXEL))
    assert set(sites.z.tolist()) == {0, 1, 2} and q.edge_sites == len(sites)
    assert set(noise_patches(vol).z.tolist()) == {0, 1, 2}
    expected = 1 - _kernel_energy(NOISE_SIGMA, 1.5) / _kernel_energy(NOISE_SIGMA)
    assert q.noise_sd_reduction == pytest.approx(expected, rel=0.10)
    # a slice and a one-slice volume are the same measurement
    one = quality_report(vol[0], out[0], (PIXEL, PIXEL)).to_dict()
    assert one == quality_report(vol[:1], out[:1], (PIXEL, PIXEL)).to_dict()
    with pytest.raises(ValueError, match="differ in shape"):
        quality_report(vol, out[:2], (PIXEL, PIXEL))


def test_where_no_edge_is_measurable_the_widths_are_none_not_nan():
    rng = np.random.default_rng(0)
    flat = (40.0 + 20.0 * rng.normal(size=(96, 96))).astype(np.float32)
    d = quality_report(flat, ndimage.gaussian_filter(flat, 1.0), (PIXEL, PIXEL)).to_dict()
    assert d["edge_sites"] == 0 and d["edge_width_before_mm"] is None
    assert d["edge_width_growth"] is None and d["noise_sd_reduction"] > 0.3
    json.dumps(d, allow_nan=False)
    # edges in the input, none left in the output (everything flattened)
    image, _, _ = _scene()
    d = quality_report(image, np.full_like(image, 40.0), (PIXEL, PIXEL)).to_dict()
    assert d["edge_width_before_mm"] > 0 and d["edge_width_after_mm"] is None
    assert d["edge_width_growth"] is None and d["noise_sd_reduction"] == 1.0
    json.dumps(d, allow_nan=False)
    # no homogeneous tissue (a disc of bone in air): edges, but no noise measurement
    image = np.where(np.hypot(*np.mgrid[-60:60, -60:60]) < 40, 1000.0, -1000.0)
    image = ndimage.gaussian_filter(image, 1.0) + 20.0 * rng.normal(size=image.shape)
    d = quality_report(image, ndimage.gaussian_filter(image, 1.0), (PIXEL, PIXEL)).to_dict()
    assert d["noise_patches"] == 0 and d["noise_sd_before_hu"] is None  # not measured
    assert d["noise_sd_reduction"] is None and d["nps_mean_frequency_shift"] is None
    assert d["edge_width_growth"] > 0.1
    json.dumps(d, allow_nan=False)
