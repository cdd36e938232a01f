"""Regions for the sigma edit: a mask image on the scan's grid, or a box of voxel ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medssl.denoise.settings import is_roi_box
from medssl.errors import InputError
from medssl.io import Volume, read_volume

__all__ = ["parse_roi"]


def parse_roi(spec: str, volume: Volume) -> np.ndarray:
    """A boolean region ``(Z, Y, X)`` from ``spec``.

    ``spec`` is either a path to a mask image on the same grid as ``volume`` (non-zero =
    inside; any format medssl reads) or a box ``"z0:z1,y0:y1,x0:x1"`` of voxel index ranges
    (Python slice rules: ``:`` is the whole axis, negative indices count from the end).

    Raises:
        InputError: Unreadable mask, another grid, an empty region or a malformed box.
    """
    if is_roi_box(spec):
        mask = np.zeros(volume.shape, dtype=bool)
        parts = []
        for part in spec.split(","):
            lo, hi = part.strip().split(":")
            parts.append(slice(int(lo) if lo else None, int(hi) if hi else None))
        mask[tuple(parts)] = True
    else:
        path = Path(spec)
        if not path.exists():
            raise InputError(
                "the ROI is neither a mask file nor a box 'z0:z1,y0:y1,x0:x1'",
                path=path,
                hint="pass a mask image on the scan's grid, or voxel ranges such as "
                "10:20,100:300,:",
            )
        roi = read_volume(path)
        if not roi.same_grid(volume, tol=1e-3):
            raise InputError(
                f"the ROI mask's grid {roi.shape} / spacing {roi.spacing} does not match the "
                f"scan's {volume.shape} / {volume.spacing}",
                path=path,
                hint="resample the mask onto the scan's grid first",
            )
        mask = roi.array != 0
    if not mask.any():
        raise InputError(f"the ROI {spec!r} holds no voxel", hint="check the ranges or the mask")
    return mask
