"""Transforms: named CT windows and the HU intensity map (:mod:`medssl.transforms.windows`,
:mod:`medssl.transforms.intensity`: NumPy only), and the SSL augmentation pipelines
(:mod:`medssl.transforms.ssl`, MONAI transforms inside; imported when first used, so that
the windows do not pull in torch).
"""

from __future__ import annotations

from typing import Any

from medssl.transforms.intensity import AIR_HU, HU_PER_UNIT, hu_to_net, net_to_hu, outside_fov
from medssl.transforms.windows import BONE, FULL, LUNG, SOFT_TISSUE, WINDOWS, Window, window

__all__ = [
    "AIR_HU",
    "BONE",
    "FULL",
    "HU_PER_UNIT",
    "LUNG",
    "SOFT_TISSUE",
    "WINDOWS",
    "AugmentConfig",
    "Window",
    "hu_to_net",
    "net_to_hu",
    "outside_fov",
    "ssl_augmentation",
    "window",
]

_LAZY = {"AugmentConfig", "ssl_augmentation"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from medssl.transforms import ssl

        return getattr(ssl, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
