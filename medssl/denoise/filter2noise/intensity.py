"""The fixed mapping between Hounsfield units and the network's intensities.

``u = max(HU, -1024) / 1000``: water is 0, air -1.024, dense bone about 1 to 3. The mapping
never depends on the image (no per-image min/max scaling), so a range sigma of ``s`` network
units is always ``1000 * s`` HU. Values below -1024 HU (outside-field-of-view padding such
as -2000 or -3024) are clamped for filtering and restored unchanged in the output.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["AIR_HU", "HU_PER_UNIT", "hu_to_net", "net_to_hu", "outside_fov"]

HU_PER_UNIT = 1000.0
AIR_HU = -1024.0


def hu_to_net(hu: Tensor) -> Tensor:
    """HU -> network units (``max(HU, -1024) / 1000``)."""
    return hu.clamp(min=AIR_HU) / HU_PER_UNIT


def net_to_hu(u: Tensor) -> Tensor:
    """Network units -> HU."""
    return u * HU_PER_UNIT


def outside_fov(hu: Tensor) -> Tensor:
    """Mask of voxels below air (outside-field-of-view padding), kept unchanged on output."""
    return hu < AIR_HU
