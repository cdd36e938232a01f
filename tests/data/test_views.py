"""The two-view dataset of contrastive pretraining: partitions along the slice axis."""

from __future__ import annotations

import logging
from itertools import pairwise

import numpy as np
import pytest

from medssl.data.views import ViewDataset, partition_bounds
from medssl.data.volumes import CachedVolume


def _volume(tmp_path, depth: int, name: str = "v") -> CachedVolume:
    """A volume whose every voxel holds its slice number."""
    arr = np.broadcast_to(np.arange(depth, dtype=np.float32)[:, None, None], (depth, 24, 24))
    np.save(tmp_path / f"{name}.npy", np.ascontiguousarray(arr))
    return CachedVolume(str(tmp_path / f"{name}.npy"), "", (depth, 24, 24), name)


def test_partitions_are_disjoint_and_cover_the_axis():
    for depth, parts in ((40, 4), (41, 4), (5, 4), (3, 4)):
        bounds = [partition_bounds(depth, p, parts) for p in range(parts)]
        assert all(lo < hi for lo, hi in bounds)
        if depth >= parts:
            assert bounds[0][0] == 0 and bounds[-1][1] == depth
            assert all(a[1] == b[0] for a, b in pairwise(bounds))


@pytest.mark.parametrize("patch", [(8, 16, 16), (16, 16, 16)])
def test_a_3d_slab_stays_inside_its_partition(tmp_path, patch):
    """3D slabs were centred on a slice drawn from the partition, so about half of a slab lay
    in the neighbouring partitions: "other partition" negatives shared anatomy."""
    ds = ViewDataset([_volume(tmp_path, 64)], patch, partitions=4, seed=0, jitter=0.0)
    seen = set()
    for i in range(64):
        item = ds[i]
        lo, hi = partition_bounds(64, int(item["partition"]), 4)
        slices = item["view1"][0, :, 0, 0].numpy()  # the slice numbers the slab holds
        assert slices.min() >= lo and slices.max() < hi, (i, lo, hi, slices)
        assert np.array_equal(slices, np.arange(slices[0], slices[0] + patch[0]))
        seen.add(int(slices[0]))
    # the slab's position inside the partition varies where the partition leaves room
    assert len(seen) == 4 if patch[0] == 16 else len(seen) > 4


def test_partitions_thinner_than_the_slab_are_named(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="medssl.data.views"):
        ViewDataset([_volume(tmp_path, 20)], (8, 16, 16), partitions=4)
    assert "1 of 1 volumes have partitions thinner than a slab of 8 slices" in caplog.text
