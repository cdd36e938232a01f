"""Gaussian smoothing baselines (fixed sigma, or the sigma that an oracle picks)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

__all__ = ["gaussian_denoise", "oracle_search"]


def gaussian_denoise(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with ``sigma`` pixels (reflect borders)."""
    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), sigma, mode="reflect")


def oracle_search(
    score: Callable[[float], float], lo: float, hi: float, *, coarse: int = 9, refine: int = 8
) -> tuple[float, float]:
    """Maximise ``score(param)`` over ``[lo, hi]``: a coarse log-spaced grid, then golden-section
    refinement around the best grid point (scores are unimodal in the smoothing strength).

    Returns:
        ``(best parameter, best score)``.
    """
    grid = np.geomspace(lo, hi, coarse)
    scores = [score(float(g)) for g in grid]
    i = int(np.argmax(scores))
    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, coarse - 1)])
    best = (float(grid[i]), float(scores[i]))
    phi = (np.sqrt(5) - 1) / 2
    c, d = b - phi * (b - a), a + phi * (b - a)
    fc, fd = score(c), score(d)
    for _ in range(refine):
        if fc > fd:
            b, d, fd = d, c, fc
            c = b - phi * (b - a)
            fc = score(c)
        else:
            a, c, fc = c, d, fd
            d = a + phi * (b - a)
            fd = score(d)
    for p, s in ((c, fc), (d, fd)):
        if s > best[1]:
            best = (float(p), float(s))
    return best
