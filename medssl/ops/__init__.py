"""Compiled operators (imports nothing else of medssl)."""

from medssl.ops.bilateral import (
    BilateralFilter,
    bilateral_filter,
    joint_bilateral_filter,
    radius_for_sigma,
    set_backend,
)

__all__ = [
    "BilateralFilter",
    "bilateral_filter",
    "joint_bilateral_filter",
    "radius_for_sigma",
    "set_backend",
]
