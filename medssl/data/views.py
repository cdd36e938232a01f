"""Two-view samples for contrastive and graph-matching pretraining.

Volumes are split into ``S`` partitions along their first (slice) axis, as in Chaitanya et al.
(NeurIPS 2020): partition ``s`` of every volume covers roughly the same anatomy when volumes
are roughly aligned. Global sample ``i`` belongs to group ``g = i // S`` and partition
``i % S``; the group picks one volume, so a batch of ``B = m·S`` consecutive samples holds one
slice (2D) or slab (3D) from each partition of ``m`` volumes, the batch layout the paper's
partition-aware losses need. Like :class:`medssl.data.patches.PatchDataset`, item ``i`` is a
pure function of ``(seed, i)``.

Views: ``view1`` and ``view2`` are two augmentations (``transform``, drawn independently) of
crops of the same slice/slab. With ``aligned=True`` (the local contrastive stage) both views
use the same crop, so with intensity-only transforms they stay voxel-aligned; otherwise each
view has its own crop offset (``jitter``) and ``start1``/``start2`` give the crops' corners, so
the spatial correspondence between the views is known (a shift by ``start2 - start1``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medssl.data.patches import crop_with_padding
from medssl.data.volumes import CachedVolume

__all__ = ["ViewDataset", "partition_bounds", "slab_start"]

log = logging.getLogger(__name__)


def partition_bounds(depth: int, part: int, partitions: int) -> tuple[int, int]:
    """Slices ``[lo, hi)`` of partition ``part`` of ``partitions`` along an axis of ``depth``
    slices (consecutive, disjoint, covering the axis; at least one slice each)."""
    lo = depth * part // partitions
    return lo, max(lo + 1, depth * (part + 1) // partitions)


def slab_start(lo: int, hi: int, size: int, rng: np.random.Generator) -> int:
    """First slice of a slab of ``size`` slices drawn inside ``[lo, hi)`` (uniformly over the
    positions that fit); a partition thinner than the slab gets the slab centred on it (it
    then overlaps its neighbours: :class:`ViewDataset` warns)."""
    if hi - lo >= size:
        return int(rng.integers(lo, hi - size + 1))
    return (lo + hi - size) // 2


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
        aligned: Both views from the same crop (else one crop offset per view).

    Items:
        ``{"view1", "view2": (1, *patch) float32, "start1", "start2": (d,) int64 crop corners,
        "partition", "volume", "seed", "index": int64}``.
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
        aligned: bool = False,
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
        self.aligned = bool(aligned)
        if len(self.patch_size) == 3:
            thin = sum(v.shape[0] // self.partitions < self.patch_size[0] for v in self.volumes)
            if thin:
                log.warning(
                    "%d of %d volumes have partitions thinner than a slab of %d slices: their "
                    "slabs overlap neighbouring partitions (fewer partitions, thinner slabs or "
                    "the 2d configuration avoid it)",
                    thin,
                    len(self.volumes),
                    self.patch_size[0],
                )

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Any]:
        group, part = divmod(int(index), self.partitions)
        v = int(np.random.default_rng([self.seed, group, 0]).integers(len(self.volumes)))
        rng = np.random.default_rng([self.seed, int(index), 1])
        arr = np.load(self.volumes[v].image, mmap_mode="r")
        lo, hi = partition_bounds(arr.shape[0], part, self.partitions)
        if len(self.patch_size) == 2:
            z = int(rng.integers(lo, hi))
        else:  # a slab inside its partition: neighbouring partitions share no slice
            z = slab_start(lo, hi, self.patch_size[0], rng) + self.patch_size[0] // 2
        plane = self.patch_size[-2:]
        centre = [s // 2 for s in arr.shape[1:]]

        def corner() -> list[int]:
            in_plane = [
                c - p // 2 + round(float(rng.uniform(-self.jitter, self.jitter)) * p)
                for c, p in zip(centre, plane, strict=True)
            ]
            return (
                in_plane if len(self.patch_size) == 2 else [z - self.patch_size[0] // 2, *in_plane]
            )

        starts = [corner()]
        starts.append(starts[0] if self.aligned else corner())
        seeds = [int(s) for s in rng.integers(2**31 - 1, size=2)]
        views = []
        for start, seed in zip(starts, seeds, strict=True):
            if len(self.patch_size) == 2:
                crop = crop_with_padding(arr[z], start, plane)[None]
            else:
                crop = crop_with_padding(arr, start, self.patch_size)[None]
            views.append(
                self.transform(crop, seed)
                if self.transform is not None
                else torch.from_numpy(np.ascontiguousarray(crop))
            )
        return {
            "view1": views[0].float().contiguous(),
            "view2": views[1].float().contiguous(),
            "start1": torch.tensor(starts[0], dtype=torch.int64),
            "start2": torch.tensor(starts[1], dtype=torch.int64),
            "partition": torch.tensor(part, dtype=torch.int64),
            "volume": torch.tensor(v, dtype=torch.int64),
            "seed": torch.tensor(int(rng.integers(2**62)), dtype=torch.int64),
            "index": torch.tensor(int(index), dtype=torch.int64),
        }
