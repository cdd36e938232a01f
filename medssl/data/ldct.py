"""Low-dose CT simulation in the sinogram domain (how LDCT benchmark pairs are made).

1. HU -> linear attenuation: ``mu = 0.0192 / mm * (1 + HU / 1000)``, after clamping
   outside-field-of-view padding (-2000, -3024) to -1024 HU; ``mu >= 0``.
2. Parallel-beam projection ``p = radon(mu) * pixel_mm`` over ``ceil(pi / 2 * N)`` angles in
   [0, 180) degrees (``circle=False``).
3. Counts ``I = Poisson(I0 * exp(-p)) + Normal(0, 10^2)``; ``p_ld = -log(max(I, 1) / I0)``.
4. Filtered back-projection of ``p_ld / pixel_mm`` back to HU, with one of scikit-image's
   reconstruction kernels (``KERNELS``): ``"ramp"`` (the default, the sharpest), or the ramp
   apodised by ``"shepp-logan"``, ``"cosine"``, ``"hamming"`` or ``"hann"`` (smoother: less
   noise, correlated over more pixels, as a scanner's "standard" or "soft" kernels are).
5. The reference is the same reconstruction (same kernel) of the noiseless sinogram, so that
   the noisy and the reference image differ by the noise only (no discretisation error).

The noise is streaky and spatially correlated, as real LDCT noise is; it is a 2D parallel-beam
approximation. Dose levels: ``I0 = 1e5`` ("normal"), ``2.5e4`` ("quarter"), ``1e4``. The noise
draw depends on the seed only, not on the kernel: two kernels with the same seed reconstruct
the same noisy sinogram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medssl.transforms.intensity import AIR_HU, HU_PER_UNIT, clamp_air

__all__ = [
    "DOSE_LEVELS",
    "KERNELS",
    "MU_WATER_PER_MM",
    "LowDosePair",
    "project",
    "reference_image",
    "simulate_low_dose",
]

MU_WATER_PER_MM = 0.0192
DOSE_LEVELS = {"normal": 1e5, "quarter": 2.5e4, "very_low": 1e4}
ELECTRONIC_NOISE_STD = 10.0
KERNELS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


@dataclass
class LowDosePair:
    """A simulated low-dose image and its reference, both in HU.

    Shape:
        noisy, reference: ``(H, W)`` float32.
    """

    noisy: np.ndarray
    reference: np.ndarray
    i0: float
    seed: int
    kernel: str = "ramp"


def _square(hu: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    h, w = hu.shape
    n = max(h, w)
    out = np.full((n, n), AIR_HU, dtype=np.float64)
    top, left = (n - h) // 2, (n - w) // 2
    out[top : top + h, left : left + w] = hu
    return out, (slice(top, top + h), slice(left, left + w))


def _angles(n: int) -> np.ndarray:
    return np.linspace(0.0, 180.0, math.ceil(math.pi / 2 * n), endpoint=False)


def project(hu: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Noiseless line integrals ``p`` (dimensionless) of a square HU image (steps 1-2)."""
    from skimage.transform import radon

    hu = clamp_air(hu)
    mu = np.maximum(MU_WATER_PER_MM * (1.0 + hu / HU_PER_UNIT), 0.0)
    return radon(mu, _angles(hu.shape[0]), circle=False) * pixel_mm


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown reconstruction kernel {kernel!r}; expected one of {KERNELS}")


def _check_slice(hu: np.ndarray) -> np.ndarray:
    arr = np.asarray(hu, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected one slice of shape (H, W), got shape {arr.shape}")
    return arr


def _reconstruct(p: np.ndarray, pixel_mm: float, n: int, kernel: str) -> np.ndarray:
    from skimage.transform import iradon

    mu = iradon(p / pixel_mm, _angles(n), circle=False, filter_name=kernel, output_size=n)
    return (mu / MU_WATER_PER_MM - 1.0) * HU_PER_UNIT


def reference_image(
    hu: np.ndarray,
    pixel_mm: float,
    clean_projection: np.ndarray | None = None,
    *,
    kernel: str = "ramp",
) -> np.ndarray:
    """The noiseless reconstruction of a slice (step 5), cropped to its shape.

    Args:
        hu: ``(H, W)`` slice in HU.
        pixel_mm: In-plane pixel size in mm.
        clean_projection: Its noiseless :func:`project` output (of the squared slice), to reuse.
        kernel: Reconstruction kernel (``KERNELS``); the reference of a low-dose image must
            use the kernel the image was reconstructed with.

    Shape:
        hu: ``(H, W)``; returns ``(H, W)`` float32.
    """
    _check_kernel(kernel)
    square, crop = _square(_check_slice(hu))
    p = clean_projection if clean_projection is not None else project(square, pixel_mm)
    return _reconstruct(p, pixel_mm, square.shape[0], kernel)[crop].astype(np.float32)


def simulate_low_dose(
    hu: np.ndarray,
    pixel_mm: float,
    i0: float,
    seed: int,
    *,
    clean_projection: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    kernel: str = "ramp",
) -> LowDosePair:
    """Simulate a low-dose acquisition of one slice.

    Args:
        hu: ``(H, W)`` slice in HU (non-square slices are padded with air and cropped back).
        pixel_mm: In-plane pixel size in mm.
        i0: Incident photons per ray (``DOSE_LEVELS``).
        seed: Seed of the noise draw (fix it per slice).
        clean_projection: The noiseless :func:`project` output of the (squared) slice, to
            reuse across dose levels (the projection costs seconds).
        reference: Its reconstruction with the same ``kernel`` (:func:`reference_image`, or
            the squared slice's), likewise reusable.
        kernel: Reconstruction kernel of the noisy image and of the reference (``KERNELS``).
            The noise draw does not depend on it.

    Returns:
        The noisy reconstruction and the reference, cropped to the input's shape.

    Shape:
        hu: ``(H, W)``; ``noisy`` and ``reference``: ``(H, W)`` float32.
    """
    _check_kernel(kernel)
    hu = _check_slice(hu)
    square, crop = _square(hu)
    n = square.shape[0]
    p = clean_projection if clean_projection is not None else project(square, pixel_mm)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(i0 * np.exp(-p)).astype(np.float64)
    counts += rng.normal(0.0, ELECTRONIC_NOISE_STD, size=counts.shape)
    p_ld = -np.log(np.maximum(counts, 1.0) / i0)
    noisy = _reconstruct(p_ld, pixel_mm, n, kernel)
    if reference is None:
        ref = _reconstruct(p, pixel_mm, n, kernel)[crop]
    else:
        ref = np.asarray(reference)
        ref = ref if ref.shape == hu.shape else ref[crop]  # cropped already, or the square's
    return LowDosePair(
        noisy=noisy[crop].astype(np.float32),
        reference=ref.astype(np.float32),
        i0=float(i0),
        seed=int(seed),
        kernel=kernel,
    )
