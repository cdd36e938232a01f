"""Patch sampling from the preprocessed cache, indexed by a global sample number.

Sample ``i`` of a run is a pure function of ``(seed, i)``: which volume, where the patch lies,
the augmentation and the per-sample seed methods use for their own randomness (MAE masks). So
the data order does not depend on the number of loader workers, a resumed run continues with
exactly the samples it would have drawn, and under DDP rank ``r`` of ``W`` simply takes its
share of each global batch (:class:`StepBatchSampler`).

Volumes are memory-mapped: a patch reads only its own region from disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medssl.data.volumes import CachedVolume

__all__ = ["PatchDataset", "StepBatchSampler", "crop_with_padding"]


def crop_with_padding(
    arr: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float = 0.0
) -> np.ndarray:
    """``arr[start:start+size]`` per axis, zero-filled where the box leaves the array.

    Reads only the overlapping region (cheap on a memory map). Returns float32.
    """
    out = np.full(tuple(size), fill, dtype=np.float32)
    src, dst = [], []
    for s, n, dim in zip(start, size, arr.shape, strict=True):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = arr[tuple(src)]
    return out


class PatchDataset(Dataset):
    """Random patches from cached volumes; item ``i`` is deterministic given the seed.

    Args:
        volumes: Cached volumes (:func:`medssl.data.volumes.preprocess`).
        patch_size: ``(D, H, W)`` for 3D networks or ``(H, W)`` for 2D ones (an axial slice
            is drawn, then a patch in it).
        seed: Run seed.
        foreground_prob: Probability that a patch is centred on a foreground voxel (the rest
            are uniform over the volume), as nnU-Net oversamples foreground.
        transform: Augmentation ``transform(patch, seed) -> tensor`` on a ``(1, *patch)``
            array (see :func:`medssl.transforms.ssl_augmentation`).

    Items:
        ``{"image": (1, *patch) float32, "seed": int64, "index": int64}``.
    """

    def __init__(
        self,
        volumes: Sequence[CachedVolume],
        patch_size: Sequence[int],
        *,
        seed: int = 0,
        foreground_prob: float = 0.33,
        transform: Callable[[np.ndarray, int], torch.Tensor] | None = None,
    ) -> None:
        if not volumes:
            raise ValueError("PatchDataset needs at least one volume")
        if len(patch_size) not in (2, 3):
            raise ValueError(f"patch size must have 2 or 3 entries, got {patch_size}")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.seed = int(seed)
        self.foreground_prob = float(foreground_prob)
        self.transform = transform

    def __len__(self) -> int:  # an "epoch" has no meaning for step-based pretraining
        return 2**62

    def _foreground(self, v: int) -> np.ndarray:
        # memory-mapped, not cached: thousands of volumes x workers x ranks must not add up
        return np.load(self.volumes[v].foreground, mmap_mode="r")

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, int(index)])
        v = int(rng.integers(len(self.volumes)))
        vol = self.volumes[v]
        arr = np.load(vol.image, mmap_mode="r")
        shape = arr.shape
        fg = self._foreground(v)
        if len(fg) and rng.random() < self.foreground_prob:
            centre = fg[int(rng.integers(len(fg)))].astype(int)
        else:
            centre = np.array([int(rng.integers(s)) for s in shape])
        if len(self.patch_size) == 3:
            start = [int(c) - p // 2 for c, p in zip(centre, self.patch_size, strict=True)]
            patch = crop_with_padding(arr, start, self.patch_size)
        else:
            z = int(centre[0])
            start = [int(c) - p // 2 for c, p in zip(centre[1:], self.patch_size, strict=True)]
            patch = crop_with_padding(arr[z], start, self.patch_size)
        sample_seed = int(rng.integers(2**62))
        aug_seed = int(rng.integers(2**31 - 1))
        patch = patch[None]
        image = (
            self.transform(patch, aug_seed)
            if self.transform is not None
            else torch.from_numpy(np.ascontiguousarray(patch))
        )
        return {
            "image": image.float().contiguous(),
            "seed": torch.tensor(sample_seed, dtype=torch.int64),
            "index": torch.tensor(int(index), dtype=torch.int64),
        }


class StepBatchSampler(Sampler[list[int]]):
    """Global sample numbers of each step's batch for one DDP rank.

    Step ``t`` of a run with global batch ``B·W`` covers samples ``t·B·W … (t+1)·B·W − 1``;
    rank ``r`` takes ``t·B·W + r·B … + B − 1``. Starting at ``start_step`` resumes exactly.

    Args:
        batch_size: Per-rank batch ``B``.
        num_steps: Last step (exclusive).
        start_step: First step.
        rank: This process's rank.
        world_size: ``W``.
    """

    def __init__(
        self,
        batch_size: int,
        num_steps: int,
        *,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.batch_size = int(batch_size)
        self.num_steps = int(num_steps)
        self.start_step = int(start_step)
        self.rank = int(rank)
        self.world_size = int(world_size)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        b, w = self.batch_size, self.world_size
        for t in range(self.start_step, self.num_steps):
            first = t * b * w + self.rank * b
            yield list(range(first, first + b))
