"""Transforms: SSL augmentation pipelines (MONAI transforms inside)."""

from medssl.transforms.ssl import AugmentConfig, ssl_augmentation

__all__ = ["AugmentConfig", "ssl_augmentation"]
