"""Named CT windows in Hounsfield units, and the map of HU to [0, 1] through a window.

A window is the HU range ``[low, high]`` that is shown (or measured) from black to white;
radiology names it by its width ``W = high - low`` and level (centre) ``L = (low + high) / 2``.
Every fixed HU range of medssl is one of these, so previews, metrics and written DICOM
display hints agree. The windows never depend on the image (no per-image min/max).

This module imports nothing of medssl.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["BONE", "FULL", "LUNG", "SOFT_TISSUE", "WINDOWS", "Window", "window"]


class Window(NamedTuple):
    """A HU range ``[low, high]`` (a tuple, so ``lo, hi = SOFT_TISSUE`` works)."""

    low: float
    high: float

    @property
    def width(self) -> float:
        """``high - low`` (HU)."""
        return self.high - self.low

    @property
    def center(self) -> float:
        """The level, ``(low + high) / 2`` (HU)."""
        return (self.low + self.high) / 2.0

    @classmethod
    def from_level(cls, center: float, width: float) -> Window:
        """The window of level ``center`` and width ``width`` (HU)."""
        return cls(center - width / 2.0, center + width / 2.0)

    def label(self) -> str:
        """``"W 400 L 40"``: how a radiologist names the window."""
        return f"W {self.width:g} L {self.center:g}"


#: Soft tissue (W 400 L 40): previews, sigma-map figures, the soft-tissue PSNR, the display
#: hint of written CT series.
SOFT_TISSUE = Window(-160.0, 240.0)
#: Lung (W 1500 L -600).
LUNG = Window(-1350.0, 150.0)
#: Bone (W 1800 L 400).
BONE = Window(-500.0, 1300.0)
#: The denoising metrics' range (W 2000 L 0): air to dense bone, PSNR and SSIM on [0, 1].
FULL = Window(-1000.0, 1000.0)

#: The windows by name.
WINDOWS: dict[str, Window] = {
    "soft_tissue": SOFT_TISSUE,
    "lung": LUNG,
    "bone": BONE,
    "full": FULL,
}


def window(hu: np.ndarray, lo_hi: tuple[float, float] = FULL) -> np.ndarray:
    """Clip HU to a window and map it linearly to [0, 1].

    Args:
        hu: An image in HU, any shape.
        lo_hi: The window (a :class:`Window` or a ``(low, high)`` pair); :data:`FULL` by
            default.

    Returns:
        float64 array of ``hu``'s shape: 0 at or below ``low``, 1 at or above ``high``.
    """
    lo, hi = lo_hi
    return (np.clip(np.asarray(hu, dtype=np.float64), lo, hi) - lo) / (hi - lo)
