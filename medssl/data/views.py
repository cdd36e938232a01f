"""Two-view samples for contrastive and graph-matching pretraining.

Volumes are split into ``S`` partitions along their first (slice) axis, as in Chaitanya et al.
(NeurIPS 2020): partition ``s`` of every volume covers roughly the same anatomy when volumes
are roughly aligned. Global sample ``i`` belongs to group ``g = i // S`` and partition
``i % S``; the group picks one volume, so a batch of ``B = m·S`` consecutive samples holds one
slice (2D) or slab (3D) from each partition of ``m`` volumes, the batch layout the paper's
partition-aware losses need. Like :class:`medssl.data.patches.PatchDataset`, item ``i`` is a
pure function of ``(seed, i)``.

Views: ``view1`` and ``view2`` are two augmentations of the same crop. With
``aligned=True`` (the local contrastive stage) only intensity augmentations are drawn, so the
two views stay voxel-aligned; otherwise spatial ones (flips, small affine) are drawn
independently per view and ``correspondence`` cannot be assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medssl.data.patches import crop_with_padding
from medssl.data.volumes import CachedVolume

__all__ = ["ViewDataset"]


class ViewDataset(Dataset):
    """Two augmented views of a slice/slab from partition ``i % S`` of a volume.

    Args:
        volumes: Cached volumes (:func:`medssl.data.volumes.preprocess`).
        patch_size: ``(H, W)`` (a slice) or ``(D, H, W)`` (a slab of ``D`` slices).
        partitions: ``S`` (4 in the paper).
        seed: Run seed.
        transform: ``transform(array, seed) -> tensor`` for one view (its seed differs per view).
        jitter: In-plane crop-centre jitter, as a fraction of the patch size (the crop is
            centred on the volume's in-plane centre so that partitions stay comparable).

    Items:
        ``{"view1", "view2": (1, *patch) float32, "partition", "volume", "seed", "index":
        int64}``.
    """

    def __init__(
        self,
        volumes: Sequence[CachedVolume],
        patch_size: Sequence[int],
        *,
        partitions: int = 4,
        seed: int = 0,
        transform: Callable[[np.ndarray, int], torch.Tensor] | None = None,
        jitter: float = 0.1,
    ) -> None:
        if not volumes:
            raise ValueError("ViewDataset needs at least one volume")
        if len(patch_size) not in (2, 3):
            raise ValueError(f"patch size must have 2 or 3 entries, got {patch_size}")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.partitions = int(partitions)
        self.seed = int(seed)
        self.transform = transform
        self.jitter = float(jitter)

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Any]:
        group, part = divmod(int(index), self.partitions)
        v = int(np.random.default_rng([self.seed, group, 0]).integers(len(self.volumes)))
        rng = np.random.default_rng([self.seed, int(index), 1])
        arr = np.load(self.volumes[v].image, mmap_mode="r")
        depth = arr.shape[0]
        lo = depth * part // self.partitions
        hi = max(lo + 1, depth * (part + 1) // self.partitions)
        z = int(rng.integers(lo, hi))
        plane = self.patch_size[-2:]
        centre = [s // 2 for s in arr.shape[1:]]
        start = [
            c - p // 2 + round(float(rng.uniform(-self.jitter, self.jitter)) * p)
            for c, p in zip(centre, plane, strict=True)
        ]
        if len(self.patch_size) == 2:
            crop = crop_with_padding(arr[z], start, plane)
        else:
            d = self.patch_size[0]
            crop = crop_with_padding(arr, [z - d // 2, *start], self.patch_size)
        crop = crop[None]
        seeds = [int(s) for s in rng.integers(2**31 - 1, size=2)]
        views = [
            self.transform(crop, s)
            if self.transform is not None
            else torch.from_numpy(np.ascontiguousarray(crop))
            for s in seeds
        ]
        return {
            "view1": views[0].float().contiguous(),
            "view2": views[1].float().contiguous(),
            "partition": torch.tensor(part, dtype=torch.int64),
            "volume": torch.tensor(v, dtype=torch.int64),
            "seed": torch.tensor(int(rng.integers(2**62)), dtype=torch.int64),
            "index": torch.tensor(int(index), dtype=torch.int64),
        }
