"""The fixed mapping between Hounsfield units and the network's intensities (defined once in
:mod:`medssl.transforms.intensity`, re-exported here for Filter2Noise).

``u = max(HU, -1024) / 1000``: water is 0, air -1.024, dense bone about 1 to 3. The mapping
never depends on the image (no per-image min/max scaling), so a range sigma of ``s`` network
units is always ``1000 * s`` HU. Values below -1024 HU (outside-field-of-view padding such
as -2000 or -3024) are clamped for filtering and restored unchanged in the output.
"""

from __future__ import annotations

from medssl.transforms.intensity import AIR_HU, HU_PER_UNIT, hu_to_net, net_to_hu, outside_fov

__all__ = ["AIR_HU", "HU_PER_UNIT", "hu_to_net", "net_to_hu", "outside_fov"]
