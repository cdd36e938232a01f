"""The low-dose simulation (medssl.data.ldct) and the benchmark's true-noise measure
(benchmarks/ldct/truth.py), on a 64x64 phantom."""

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from medssl.data.ldct import (
    KERNELS,
    MU_WATER_PER_MM,
    project,
    reference_image,
    simulate_low_dose,
)

TRUTH_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "ldct" / "truth.py"
PIXEL_MM = 1.0
QUARTER = 2.5e4


@pytest.fixture(scope="module")
def truth():
    spec = importlib.util.spec_from_file_location("ldct_truth", TRUTH_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _phantom(n: int = 64) -> np.ndarray:
    """Air, a soft-tissue ellipse (40 HU) with a lung-like hole (-800) and a bone disc (700)."""
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    hu = np.full((n, n), -1000.0)
    hu[(y / (0.42 * n)) ** 2 + (x / (0.46 * n)) ** 2 <= 1] = 40.0
    hu[((y + 0.12 * n) / (0.1 * n)) ** 2 + ((x - 0.2 * n) / (0.12 * n)) ** 2 <= 1] = -800.0
    hu[np.hypot(y - 0.2 * n, x + 0.2 * n) <= 0.06 * n] = 700.0
    return hu


def _non_square() -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """A 64x56 slice, the 64x64 square it is padded to with air, and the crop back."""
    hu = _phantom()[:, 4:60]
    square = np.full((64, 64), -1024.0)
    square[:, 4:60] = hu
    return hu, square, (slice(0, 64), slice(4, 60))


def _fbp_ramp_hu(p: np.ndarray, n: int) -> np.ndarray:
    """Step 4 as written before kernels existed (commit 9bc5c1d): scikit-image's ramp FBP."""
    from skimage.transform import iradon

    theta = np.linspace(0.0, 180.0, math.ceil(math.pi / 2 * n), endpoint=False)
    mu = iradon(p / PIXEL_MM, theta, circle=False, filter_name="ramp", output_size=n)
    return (mu / MU_WATER_PER_MM - 1.0) * 1000.0


def test_ramp_is_the_default_and_unchanged():
    hu, square, crop = _non_square()
    n = square.shape[0]
    p = project(square, PIXEL_MM)
    # today's simulation, step by step (module docstring, steps 3-5)
    rng = np.random.default_rng(7)
    counts = rng.poisson(QUARTER * np.exp(-p)).astype(np.float64)
    counts += rng.normal(0.0, 10.0, size=counts.shape)
    p_ld = -np.log(np.maximum(counts, 1.0) / QUARTER)
    want_noisy = _fbp_ramp_hu(p_ld, n)[crop].astype(np.float32)
    want_ref = _fbp_ramp_hu(p, n)[crop].astype(np.float32)

    pair = simulate_low_dose(hu, PIXEL_MM, QUARTER, 7)
    assert pair.kernel == "ramp"
    np.testing.assert_array_equal(pair.noisy, want_noisy)
    np.testing.assert_array_equal(pair.reference, want_ref)
    np.testing.assert_array_equal(reference_image(hu, PIXEL_MM), want_ref)
    explicit = simulate_low_dose(hu, PIXEL_MM, QUARTER, 7, kernel="ramp")
    np.testing.assert_array_equal(explicit.noisy, want_noisy)


def test_smoother_kernels_give_less_noise_correlated_over_more_pixels(truth):
    hu = _phantom()
    p = project(hu, PIXEL_MM)
    sd, length = [], []
    for kernel in KERNELS:  # sharpest first: ramp, shepp-logan, cosine, hamming, hann
        pair = simulate_low_dose(hu, PIXEL_MM, QUARTER, 3, clean_projection=p, kernel=kernel)
        t = truth.noise_truth(pair.noisy, pair.reference)
        assert t.soft_pixels > 1000
        sd.append(t.soft_sd_hu)
        length.append(t.correlation_length_px)
    assert all(a > b for a, b in itertools.pairwise(sd)), sd
    assert all(a < b for a, b in itertools.pairwise(length)), length
    assert sd[-1] < 0.6 * sd[0]  # Hann: ~0.4x the ramp's noise SD
    assert length[-1] > 1.5 * length[0]


def test_the_reference_uses_the_kernel_and_the_noise_draw_does_not(truth):
    hu = _phantom()
    p = project(hu, PIXEL_MM)
    ramp = simulate_low_dose(hu, PIXEL_MM, QUARTER, 3, clean_projection=p)
    hann = simulate_low_dose(hu, PIXEL_MM, QUARTER, 3, clean_projection=p, kernel="hann")
    assert hann.kernel == "hann"
    ref_hann = reference_image(hu, PIXEL_MM, p, kernel="hann")
    np.testing.assert_array_equal(hann.reference, ref_hann)
    assert np.abs(ref_hann - ramp.reference).max() > 100  # edges are blurred
    # same seed: the same noisy sinogram, filtered two ways (strongly correlated noise);
    # another seed: independent noise
    soft = truth.soft_tissue_mask(ramp.reference)
    e_ramp = (ramp.noisy - ramp.reference)[soft]
    e_hann = (hann.noisy - hann.reference)[soft]
    other = simulate_low_dose(hu, PIXEL_MM, QUARTER, 4, clean_projection=p, kernel="hann")
    assert np.corrcoef(e_ramp, e_hann)[0, 1] > 0.5
    assert abs(np.corrcoef(e_ramp, (other.noisy - other.reference)[soft])[0, 1]) < 0.15


def test_a_given_reference_may_be_cropped_or_square():
    hu, square, _ = _non_square()
    p = project(square, PIXEL_MM)
    want = simulate_low_dose(hu, PIXEL_MM, QUARTER, 1, clean_projection=p, kernel="cosine")
    for ref in (
        reference_image(hu, PIXEL_MM, p, kernel="cosine"),  # cropped to the slice
        reference_image(square, PIXEL_MM, p, kernel="cosine"),  # the squared slice's
    ):
        got = simulate_low_dose(
            hu, PIXEL_MM, QUARTER, 1, clean_projection=p, reference=ref, kernel="cosine"
        )
        np.testing.assert_array_equal(got.reference, want.reference)
        np.testing.assert_array_equal(got.noisy, want.noisy)


def test_unknown_kernels_and_shapes_are_refused():
    hu = _phantom(16)
    with pytest.raises(ValueError, match="shepp-logan"):
        simulate_low_dose(hu, PIXEL_MM, QUARTER, 0, kernel="soft")
    with pytest.raises(ValueError, match="kernel"):
        reference_image(hu, PIXEL_MM, kernel="sharp")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        simulate_low_dose(hu[None], PIXEL_MM, QUARTER, 0)


def test_true_noise_measure_on_noise_of_known_sd_and_correlation(truth):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    white = rng.normal(size=(128, 128))
    mask = np.zeros(white.shape, dtype=bool)
    mask[10:118, 20:110] = True
    for sigma in (1.0, 2.0):  # Gaussian-smoothed white noise: 1/e radius 2 sigma
        noise = ndimage.gaussian_filter(white, sigma)
        noise *= 25.0 / noise[mask].std()
        assert truth.correlation_length_px(noise, mask) == pytest.approx(2 * sigma, rel=0.1)
        reference = np.full(white.shape, -1000.0)
        reference[mask] = 40.0
        t = truth.noise_truth(reference + noise, reference)
        assert t.soft_sd_hu == pytest.approx(25.0, rel=0.05)
        assert t.correlation_length_px == pytest.approx(2 * sigma, rel=0.1)
    # smoothed along x only: neighbours correlate along x (exp(-1 / (4 * 1.5^2))), not along y
    streaks = ndimage.gaussian_filter(white, (0.0, 1.5))
    t = truth.noise_truth(reference + streaks, reference)
    assert t.rho_x == pytest.approx(math.exp(-1 / 9), abs=0.05)
    assert abs(t.rho_y) < 0.05
    # a mask of 6-px stripes: vertical lags have fewer pairs (each lag is a mean over its own)
    stripes = ((np.arange(128) // 6) % 2 == 0)[:, None] & mask.any(axis=0)[None, :]
    noise = ndimage.gaussian_filter(white, 2.0)
    assert truth.correlation_length_px(noise, stripes) == pytest.approx(4.0, rel=0.1)
    assert truth.correlation_length_px(white, mask) < 1.0
    radius, rho = truth.radial_autocorrelation(white, mask, 4)
    assert radius[0] == 0 and rho[0] == pytest.approx(1.0)
    assert np.abs(rho[1:]).max() < 0.05
    smooth = ndimage.gaussian_filter(white, 8.0)  # 1/e radius 16 px: beyond lags of 4
    assert math.isinf(truth.correlation_length_px(smooth, mask, 4))


def test_soft_tissue_mask_keeps_away_from_air_lung_and_bone(truth):
    from scipy import ndimage

    hu = _phantom()
    soft = truth.soft_tissue_mask(hu)
    body = truth.body_mask(hu)
    assert soft.sum() > 1000
    assert body[hu == -800].all()  # the lung is inside the body
    assert not body[0].any()
    near = ndimage.binary_dilation((hu != 40.0), iterations=truth.ERODE_PX)
    assert not (soft & near).any()


def test_true_psd_matches_the_spectrum_of_filtered_noise(truth):
    from scipy import ndimage

    n = 128
    rng = np.random.default_rng(1)
    white = rng.normal(size=(n, n))
    reference = np.full((n, n), -1000.0)
    reference[8:120, 8:120] = 40.0
    soft = truth.soft_tissue_mask(reference)
    fy, fx = np.abs(np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    f = np.hypot(fy, fx)
    delta = np.zeros((n, n))
    delta[0, 0] = 1.0
    # circular filtering along x only (sigma 1.5 px): the power falls with fx, not with fy
    for sigma in ((1.0, 1.0), (0.0, 1.5), (0.0, 0.0)):
        kernel = np.fft.fft2(ndimage.gaussian_filter(delta, sigma, mode="wrap"))
        noise = np.real(np.fft.ifft2(np.fft.fft2(white) * kernel))
        noise *= 25.0 / noise[soft].std()
        psd = truth.true_psd(reference + noise, reference)
        assert psd.shape == (n, n) and psd.min() >= 0.0
        assert psd.mean() == pytest.approx(noise[soft].var(), rel=1e-6)
        want = np.abs(kernel) ** 2
        want *= psd.mean() / want.mean()
        for lo, hi in ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3)):
            for axis in (fy, fx):  # bands of vertical, then horizontal frequency
                band = (axis >= lo) & (axis < hi) & (f < 0.3)
                # where the power is ~0, the clipped estimation noise (~5 % of the mean) is left
                expect = pytest.approx(want[band].mean(), rel=0.15, abs=0.05 * psd.mean())
                assert psd[band].mean() == expect
    # the last draw was white: a flat spectrum
    assert psd[f < 0.1].mean() == pytest.approx(psd[f > 0.4].mean(), rel=0.15)
