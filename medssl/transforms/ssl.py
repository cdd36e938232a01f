"""Augmentation for pretraining patches, built from MONAI array transforms.

Each call is seeded (``transform(patch, seed)``), so a patch's augmentation is a function of its
sample number (see :mod:`medssl.data.patches`), whatever worker runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["AugmentConfig", "ssl_augmentation"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings.

    Attributes:
        flip_prob: Probability of a flip along each spatial axis.
        affine_prob: Probability of a random rotation (±15°) and scaling (0.85-1.15).
        intensity_prob: Probability of each of a random intensity scale (±10 %) and shift
            (±0.1, in normalised units).
        gamma_prob: Probability of a random contrast (gamma) change, gamma in 0.7-1.5.
        noise_prob: Probability of added Gaussian noise (std 0.1 in normalised units).
    """

    flip_prob: float = 0.5
    affine_prob: float = 0.0
    intensity_prob: float = 0.2
    gamma_prob: float = 0.0
    noise_prob: float = 0.0


def ssl_augmentation(config: AugmentConfig, spatial_dims: int):
    """A seeded augmentation ``fn(patch, seed) -> tensor`` for ``(1, *patch)`` arrays."""
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandAffine,
        RandFlip,
        RandGaussianNoise,
        RandScaleIntensity,
        RandShiftIntensity,
    )

    steps: list[Any] = []
    if config.flip_prob > 0:
        steps += [RandFlip(prob=config.flip_prob, spatial_axis=a) for a in range(spatial_dims)]
    if config.affine_prob > 0:
        rot = (np.pi / 12,) * (3 if spatial_dims == 3 else 1)
        steps.append(
            RandAffine(
                prob=config.affine_prob,
                rotate_range=rot,
                scale_range=(0.15,) * spatial_dims,
                padding_mode="zeros",
            )
        )
    if config.intensity_prob > 0:
        steps.append(RandScaleIntensity(factors=0.1, prob=config.intensity_prob))
        steps.append(RandShiftIntensity(offsets=0.1, prob=config.intensity_prob))
    if config.gamma_prob > 0:
        steps.append(RandAdjustContrast(prob=config.gamma_prob, gamma=(0.7, 1.5)))
    if config.noise_prob > 0:
        steps.append(RandGaussianNoise(prob=config.noise_prob, std=0.1))
    compose = Compose(steps)

    def apply(patch: np.ndarray, seed: int) -> torch.Tensor:
        compose.set_random_state(seed=seed)
        out = compose(torch.from_numpy(np.ascontiguousarray(patch)))
        if hasattr(out, "as_tensor"):  # MONAI MetaTensor -> plain tensor
            out = out.as_tensor()
        return torch.as_tensor(out).float()

    return apply
