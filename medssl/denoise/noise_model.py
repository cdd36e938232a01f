"""A noise model for CT as scanners reconstruct it: noise that is correlated over several
pixels, measured in homogeneous soft tissue inside the body.

CT noise is not white: its power spectrum (NPS) follows the reconstruction kernel, so smooth
("standard", "soft") kernels give noise correlated over several pixels. A noise estimate from
neighbouring-pixel differences then sees only part of the noise (several times too little on
smooth kernels), and one from the air is meaningless (scanners clip air at -1024 HU and pad
outside the field of view). This module measures the noise the way a physicist does on a
water phantom, but on the patient: square regions of homogeneous soft tissue inside the body
(each with its mean removed) are Fourier-transformed and their power averaged, which gives

* ``sd_hu``: the noise standard deviation (the square root of the NPS integral);
* ``nps``: the 2D noise power spectrum (HU² mm²) and its radial profile;
* ``acf``: the normalised autocorrelation (inverse transform of the NPS) and the
  ``correlation_length_px``, the radius where its radial profile falls to 1/e;
* ``mean_frequency``: the NPS-weighted mean spatial frequency (cycles/mm), the measure of
  noise texture that moves down when an image is over-smoothed.

Homogeneous regions are found without trusting the noise: the candidates are square patches
fully inside soft tissue (-150 to 200 HU after a light smoothing, away from the body's edge);
patches holding structure have a higher variance than the noise-only ones, so the noise level
is the mode of the patch variances (the global-noise-index idea of Christianson et al., Med.
Phys. 2015), and the patches near the mode form the NPS. The DC bin, lost to the mean removal,
is filled from its neighbours, so the SD is not biased low by correlated noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = [
    "NoiseModel",
    "estimate_noise_model",
    "fbp_low_band_sd",
    "homogeneous_patches",
    "noise_only",
    "soft_tissue_mask",
    "tissue_class_masks",
]

#: HU range of soft tissue (fat to muscle and organs) after a 1.5-pixel Gaussian smoothing.
SOFT_TISSUE_HU = (-150.0, 200.0)
#: Above this (smoothed) HU a pixel is inside the body; air, clipped air and padding are not.
BODY_HU = -500.0
#: Homogeneous tissue classes (smoothed HU): fat, and water-like soft tissue (muscle, organs).
TISSUE_CLASSES_HU = ((-250.0, -25.0), (-25.0, 200.0))
#: Gaussian smoothing (pixels) before the tissue classes are told apart.
CLASS_SMOOTHING_PX = 3.0
#: Fewer homogeneous patches than this: halve the patch size (down to 8 pixels).
MIN_PATCHES = 12


@dataclass(frozen=True)
class NoiseModel:
    """Noise of a CT scan measured in its homogeneous soft tissue.

    Attributes:
        sd_hu: Noise standard deviation (HU).
        nps: ``(P, P)`` noise power spectrum in HU² mm², DC at ``[0, 0]`` (numpy FFT order).
        acf: ``(2P - 1, 2P - 1)`` normalised autocorrelation, zero lag at the centre, measured
            up to lag ``P / 2`` (zero beyond).
        pixel_mm: ``(dy, dx)`` pixel size in mm.
        patches: Number of homogeneous patches the NPS averages.
        patch: Patch size in pixels (``P``).
    """

    sd_hu: float
    nps: np.ndarray = field(repr=False)
    acf: np.ndarray = field(repr=False)
    pixel_mm: tuple[float, float]
    patches: int
    patch: int

    @property
    def correlation_length_px(self) -> float:
        """Radius (pixels) where the radially averaged autocorrelation falls to 1/e."""
        r, prof = _radial(self.acf, centred=True)
        below = np.nonzero(prof < math.exp(-1.0))[0]
        if below.size == 0:
            return float(r[-1])
        i = int(below[0])
        if i == 0:
            return 0.0
        r0, r1, p0, p1 = r[i - 1], r[i], prof[i - 1], prof[i]
        return float(r0 + (p0 - math.exp(-1.0)) / (p0 - p1) * (r1 - r0))

    @property
    def correlation_length_mm(self) -> float:
        return self.correlation_length_px * float(np.sqrt(self.pixel_mm[0] * self.pixel_mm[1]))

    def radial_nps(self) -> tuple[np.ndarray, np.ndarray]:
        """Radially averaged NPS: ``(frequency in cycles/mm, NPS in HU² mm²)``."""
        p = self.patch
        fy = np.fft.fftfreq(p, self.pixel_mm[0])
        fx = np.fft.fftfreq(p, self.pixel_mm[1])
        f = np.hypot(fy[:, None], fx[None, :])
        step = 1.0 / (p * max(self.pixel_mm))
        bins = np.rint(f / step).astype(int)
        total = np.bincount(bins.ravel(), self.nps.ravel())
        count = np.maximum(np.bincount(bins.ravel()), 1)
        return np.arange(total.size) * step, total / count

    @property
    def mean_frequency(self) -> float:
        """NPS-weighted mean spatial frequency (cycles/mm)."""
        fy = np.fft.fftfreq(self.patch, self.pixel_mm[0])
        fx = np.fft.fftfreq(self.patch, self.pixel_mm[1])
        f = np.hypot(fy[:, None], fx[None, :])
        return float((f * self.nps).sum() / max(self.nps.sum(), 1e-12))

    def psd(self, shape: tuple[int, int]) -> np.ndarray:
        """The noise power spectral density on an image grid of ``shape`` (numpy FFT order),
        scaled so that its mean is the noise variance (HU²). (The ``bm3d`` package wants
        ``E|fft2(noise)|²``, whose mean is the variance times the pixel count: pass
        ``psd * H * W / 1000²`` for images in HU / 1000; ``benchmarks/ldct`` checks this.)"""
        centred = np.fft.fftshift(self.nps)
        zoom = (shape[0] / self.patch, shape[1] / self.patch)
        big = ndimage.zoom(centred, zoom, order=1, mode="grid-wrap", grid_mode=True)
        big = np.fft.ifftshift(np.maximum(big, 0.0))
        return big * (self.sd_hu**2 / max(float(big.mean()), 1e-12))

    def to_dict(self) -> dict[str, float | int]:
        """The scalar summary (for logs and ``noise_model.json``)."""
        return {
            "sd_hu": round(self.sd_hu, 3),
            "correlation_length_px": round(self.correlation_length_px, 3),
            "correlation_length_mm": round(self.correlation_length_mm, 3),
            "nps_mean_frequency_per_mm": round(self.mean_frequency, 4),
            "patches": self.patches,
            "patch_px": self.patch,
        }


def _radial(image: np.ndarray, *, centred: bool) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape
    cy, cx = (h // 2, w // 2) if centred else (0, 0)
    yy, xx = np.mgrid[:h, :w]
    if not centred:
        yy = np.minimum(yy, h - yy)
        xx = np.minimum(xx, w - xx)
        cy = cx = 0
    r = np.rint(np.hypot(yy - cy, xx - cx)).astype(int)
    total = np.bincount(r.ravel(), image.ravel())
    count = np.maximum(np.bincount(r.ravel()), 1)
    radius = min(h, w) // 2
    return np.arange(radius + 1), (total / count)[: radius + 1]


def _patch_size(shape: tuple[int, int]) -> int:
    return 32 if min(shape) >= 256 else 16


def _smoothed_body(hu: np.ndarray, margin_px: int) -> tuple[np.ndarray, np.ndarray]:
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), 1.5)
    body = ndimage.binary_fill_holes(smooth > BODY_HU)
    if margin_px > 0:
        body = ndimage.binary_erosion(body, iterations=margin_px)
    return smooth, body


def soft_tissue_mask(hu: np.ndarray, margin_px: int = 4) -> np.ndarray:
    """Soft tissue (fat to muscle and organs) inside the body, ``margin_px`` away from the
    body's edge.

    Shape:
        hu: ``(Y, X)``; returns a boolean ``(Y, X)``.
    """
    smooth, body = _smoothed_body(hu, margin_px)
    lo, hi = SOFT_TISSUE_HU
    return body & (smooth >= lo) & (smooth <= hi)


def tissue_class_masks(hu: np.ndarray, margin_px: int = 4) -> list[np.ndarray]:
    """One mask per homogeneous tissue class inside the body (fat, then water-like soft
    tissue), each eroded by 2 pixels so that a patch inside one holds no interface: a
    fat-muscle boundary within a patch would pass for noise.

    Shape:
        hu: ``(Y, X)``; returns boolean ``(Y, X)`` masks.
    """
    smooth, body = _smoothed_body(hu, margin_px)
    # classes from a stronger smoothing: correlated noise survives a light one
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), CLASS_SMOOTHING_PX)
    masks = []
    for lo, hi in TISSUE_CLASSES_HU:
        m = body & (smooth >= lo) & (smooth <= hi)
        masks.append(ndimage.binary_erosion(m, iterations=3))
    return masks


def homogeneous_patches(
    hu: np.ndarray, patch: int | None = None, *, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate noise patches of one slice: square patches fully inside one tissue class.

    Args:
        hu: ``(Y, X)`` slice in HU.
        patch: Patch size (default 32 px for slices of 256 px and more, else 16).
        mask: Where patches may lie (default: inside one of :func:`tissue_class_masks`).

    Returns:
        ``(patches (N, P, P) float64 with each patch's mean removed, variances (N,) of the
        patches with a least-squares plane removed)``: the plane-detrended variance ranks the
        patches by structure; the mean-removed patches feed the NPS.
    """
    p = patch or _patch_size(hu.shape)
    masks = tissue_class_masks(hu) if mask is None else [mask]
    h, w = hu.shape
    yy, xx = np.mgrid[:p, :p].astype(np.float64)
    design = np.stack([np.ones(p * p), yy.ravel() - p / 2, xx.ravel() - p / 2], 1)
    pinv = np.linalg.pinv(design)
    out, variances = [], []
    for y in range(0, h - p + 1, p // 2):
        for x in range(0, w - p + 1, p // 2):
            if not any(m[y : y + p, x : x + p].all() for m in masks):
                continue
            tile = hu[y : y + p, x : x + p].astype(np.float64)
            coef = pinv @ tile.ravel()
            resid = tile.ravel() - design @ coef
            variances.append(float(resid.var()))
            out.append(tile - tile.mean())
    if not out:
        return np.zeros((0, p, p)), np.zeros(0)
    return np.stack(out), np.asarray(variances)


def _autocovariance(tiles: np.ndarray) -> np.ndarray:
    """Mean unbiased autocovariance of mean-removed patches for every lag.

    Each lag's sum of products is divided by the number of pixel pairs at that lag (not by
    ``P²``, which would taper the autocorrelation and shorten the correlation length).

    Shape:
        tiles: ``(N, P, P)``; returns ``(2P - 1, 2P - 1)``, zero lag at ``[P - 1, P - 1]``.
    """
    p = tiles.shape[1]
    f = np.fft.fft2(tiles, s=(2 * p, 2 * p))
    sums = np.real(np.fft.ifft2((np.abs(f) ** 2).mean(0)))
    sums = np.fft.fftshift(sums)[1:, 1:]  # lags -(P-1) .. P-1
    lags = np.abs(np.arange(-(p - 1), p))
    pairs = (p - lags)[:, None] * (p - lags)[None, :]
    return sums / pairs


def _undo_mean_removal(cov: np.ndarray, p: int, iterations: int = 5) -> tuple[float, np.ndarray]:
    """The variance and normalised autocorrelation before each patch's mean was removed.

    Removing a patch's mean removes the variance of that mean, ``g σ²`` with
    ``g = Σ_k ρ(k) (P - |ky|)(P - |kx|) / P⁴``, and lowers every lag's covariance by about as
    much; for correlated noise ``g`` is several percent. Solved by fixed-point iteration on
    the lags up to ``P / 2`` (beyond them the estimate is too noisy and taken as zero).
    """
    c = p - 1
    half = p // 2
    lags = np.abs(np.arange(-(p - 1), p))
    weight = ((p - lags)[:, None] * (p - lags)[None, :]) / float(p) ** 4
    near = (lags[:, None] <= half) & (lags[None, :] <= half)
    s2 = float(cov[c, c])
    rho_hat = cov / s2
    rho = np.where(near, rho_hat, 0.0)
    g = 0.0
    for _ in range(iterations):
        g = float((rho * weight).sum())
        rho = np.where(near, rho_hat * (1.0 - g) + g, 0.0)
    return s2 / (1.0 - g), rho


def _nps_from_acf(acov: np.ndarray, p: int) -> np.ndarray:
    """NPS (HU² per pixel frequency bin, numpy FFT order on a ``P x P`` grid) from the
    autocovariance up to lag ``P / 2``, tapered so that the spectrum stays non-negative."""
    c = p - 1
    half = p // 2
    lags = np.arange(-half, half)
    taper = np.cos(np.pi * lags / (2 * half)) ** 2  # Hann: 1 at lag 0
    block = acov[c - half : c + half, c - half : c + half] * taper[:, None] * taper[None, :]
    grid = np.fft.ifftshift(block)  # lag 0 at [0, 0]
    power = np.real(np.fft.fft2(grid))
    power = np.maximum(power, 0.0)
    return power * (float(acov[c, c]) / max(float(power.mean()), 1e-12))


def noise_only(tiles: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """Which candidate patches hold noise only.

    Noise-only patches scatter around the mode of the patch variances (a scaled chi-square
    with about P² / Σρ degrees of freedom: few when the noise is correlated); structure only
    adds variance. A first pass with a fixed window measures the correlation, a second keeps
    the patches within three standard deviations of the noise-only spread.

    Shape:
        tiles: ``(N, P, P)`` mean-removed patches; variances: ``(N,)`` their plane-detrended
        variances (both from :func:`homogeneous_patches`); returns a boolean ``(N,)``, all
        true when fewer than two would be kept.
    """
    p = tiles.shape[1]
    mode = _mode_of_log(variances)
    keep = (variances > mode / 2.0) & (variances < mode * 2.0)
    for _ in range(2):
        chosen = tiles[keep] if keep.sum() >= 2 else tiles
        _, rho = _undo_mean_removal(_autocovariance(chosen), p)
        dof = p * p / max(float(np.clip(rho, 0.0, None).sum()), 1.0)
        spread = math.exp(3.0 * math.sqrt(2.0 / dof))
        keep = (variances > mode / spread) & (variances < mode * spread)
    return keep if keep.sum() >= 2 else np.ones_like(keep)


def _mode_of_log(values: np.ndarray) -> float:
    """The mode of a positive sample, from a Gaussian kernel density of its logarithm."""
    logs = np.log(values)
    if logs.size < 3:
        return float(np.exp(np.median(logs)))
    spread = 1.4826 * np.median(np.abs(logs - np.median(logs)))
    bw = max(0.9 * min(logs.std(), spread / 1.349 if spread > 0 else logs.std()), 0.05)
    bw *= logs.size ** (-0.2)
    grid = np.linspace(logs.min(), logs.max(), 512)
    dens = np.exp(-0.5 * ((grid[:, None] - logs[None, :]) / bw) ** 2).sum(1)
    return float(np.exp(grid[int(np.argmax(dens))]))


def estimate_noise_model(
    hu: np.ndarray,
    spacing_yx: tuple[float, float] = (1.0, 1.0),
    *,
    max_slices: int = 16,
    patch: int | None = None,
) -> NoiseModel:
    """Measure a scan's noise (SD, NPS, correlation) in its homogeneous soft tissue.

    Args:
        hu: ``(Z, Y, X)`` or ``(Y, X)`` in HU.
        spacing_yx: In-plane pixel size ``(dy, dx)`` in mm.
        max_slices: At most this many slices (evenly spaced) are measured.
        patch: Patch size in pixels (default: 32 at 256 px and more, else 16).

    Returns:
        The :class:`NoiseModel`. Where no homogeneous tissue is found (a phantom in air, a
        tiny crop) it has ``patches == 0`` and ``sd_hu == 0``: no measurement (callers fall
        back to another estimate).

    Shape:
        hu: ``(Z, Y, X)`` or ``(Y, X)``.
    """
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    idx = np.unique(np.linspace(0, arr.shape[0] - 1, min(max_slices, arr.shape[0])).round())
    slices = [arr[i] for i in idx.astype(int)]

    def gather(size: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        found = [homogeneous_patches(sl, size, mask=mask) for sl in slices]
        return np.concatenate([t for t, _ in found]), np.concatenate([v for _, v in found])

    # smaller patches where the tissue holds too few large ones (a single thin slice)
    p = patch or _patch_size(arr.shape[1:])
    tiles, var = gather(p)
    while tiles.shape[0] < MIN_PATCHES and p > 8 and patch is None:
        p //= 2
        tiles, var = gather(p)
    positive = var > 1e-6
    tiles, var = tiles[positive], var[positive]
    if tiles.shape[0] == 0:
        zeros = np.zeros((p, p))
        flat = np.zeros((2 * p - 1, 2 * p - 1))
        flat[p - 1, p - 1] = 1.0
        return NoiseModel(0.0, zeros, flat, (float(spacing_yx[0]), float(spacing_yx[1])), 0, p)
    tiles = tiles[noise_only(tiles, var)]
    variance, rho = _undo_mean_removal(_autocovariance(tiles), p)
    power = _nps_from_acf(rho * variance, p)
    dy, dx = float(spacing_yx[0]), float(spacing_yx[1])
    return NoiseModel(
        sd_hu=math.sqrt(variance),
        nps=power * dy * dx,  # HU² mm²
        acf=rho,
        pixel_mm=(dy, dx),
        patches=int(tiles.shape[0]),
        patch=p,
    )


#: Below this frequency (cycles/pixel) :func:`fbp_low_band_sd` caps the NPS by the ramp law.
FBP_LOW_BAND = 0.1875


def fbp_low_band_sd(model: NoiseModel, f_ref: float = FBP_LOW_BAND) -> float:
    """The noise SD (HU) of ``model`` with its low frequencies held to what filtered back
    projection can produce.

    The NPS of FBP noise rises from zero like ``|f|`` (the ramp filter; the kernel's
    apodisation is close to 1 at low frequencies), while anatomical texture that passes for
    noise in small or standard-dose images adds power that grows towards zero frequency.
    Below ``f_ref`` the NPS is capped at ``|f| * NPS(f_ref) / f_ref`` (its mean on the ring
    at ``f_ref``). Texture-free FBP noise loses almost nothing (white noise about 2 % of its
    SD); noise that is not FBP-like (Gaussian-filtered white noise, most power at zero
    frequency) loses much more: use it as a guard against texture, not as the estimate.
    """
    if model.patches == 0 or model.sd_hu <= 0:
        return 0.0
    p = model.patch
    power = model.nps / (model.pixel_mm[0] * model.pixel_mm[1])  # HU² per bin
    f = np.hypot(np.fft.fftfreq(p)[:, None], np.fft.fftfreq(p)[None, :])
    ring = np.abs(f - f_ref) <= 0.5 / p
    slope = float((power[ring] / f[ring]).mean())
    low = f < f_ref
    capped = power.copy()
    capped[low] = np.minimum(power[low], slope * f[low])
    return math.sqrt(max(float(capped.mean()), 0.0))
