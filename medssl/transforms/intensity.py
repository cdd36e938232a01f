"""The fixed map between Hounsfield units and the intensities networks see.

``u = max(HU, -1024) / 1000``: water is 0, air -1.024, dense bone about 1 to 3. The map never
depends on the image (no per-image min/max scaling), so a difference of ``s`` units is always
``1000 * s`` HU; ``1 + u`` is the attenuation relative to water. Values below air (-1024 HU:
outside-field-of-view padding such as -2000 or -3024) are clamped; :func:`outside_fov` finds
them so that a caller can restore them.

The functions take NumPy arrays or torch tensors and return the same kind. This module
imports nothing of medssl (and not torch).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

__all__ = ["AIR_HU", "HU_PER_UNIT", "clamp_air", "hu_to_net", "net_to_hu", "outside_fov"]

#: HU per network unit (the HU scale: 1000 HU is the attenuation of water).
HU_PER_UNIT = 1000.0
#: Air as CT scanners store it; lower values are padding outside the field of view.
AIR_HU = -1024.0

T = TypeVar("T")


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "clamp") and not isinstance(x, np.ndarray)


def clamp_air(hu: T) -> T:
    """``max(HU, AIR_HU)``: padding below air becomes air (NumPy in, float64 NumPy out)."""
    if _is_tensor(hu):
        return hu.clamp(min=AIR_HU)  # type: ignore[attr-defined]
    return np.maximum(np.asarray(hu, dtype=np.float64), AIR_HU)  # type: ignore[return-value]


def hu_to_net(hu: T) -> T:
    """HU -> network units, ``max(HU, -1024) / 1000``."""
    return clamp_air(hu) / HU_PER_UNIT  # type: ignore[operator]


def net_to_hu(u: T) -> T:
    """Network units -> HU (``1000 * u``)."""
    return u * HU_PER_UNIT  # type: ignore[operator]


def outside_fov(hu: T) -> T:
    """Mask of the values below air (outside-field-of-view padding), to keep unchanged."""
    return hu < AIR_HU  # type: ignore[operator]
