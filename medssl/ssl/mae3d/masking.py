"""Block masking for masked image modelling on 2D/3D patches.

A mask lives on a coarse *block grid*: the patch is cut into ``block_size`` cubes (16³ in
Revisiting MAE) and exactly ``round(ratio * n_blocks)`` of them are masked in every sample, so
each sample (and each DDP rank) has the same number of masked voxels. ``True`` means masked.

:func:`expand_mask` takes a block mask to any feature-map resolution: nearest-neighbour
repetition where the map is finer than the block grid, and where it is coarser (deep encoder
stages of S3D when the block is smaller than the encoder's total stride) a cell counts as
visible when any block inside it is visible.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["BlockMasker", "RecordedMasker", "block_grid", "expand_mask", "random_block_mask"]


def block_grid(spatial_shape: Sequence[int], block_size: int | Sequence[int]) -> tuple[int, ...]:
    """The block grid of a patch: ``ceil(shape / block)`` per axis."""
    blocks = _per_axis(block_size, len(spatial_shape))
    return tuple(math.ceil(s / b) for s, b in zip(spatial_shape, blocks, strict=True))


def _per_axis(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"expected {n} values, got {value}")
    return value


def random_block_mask(
    grid: Sequence[int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One sample's block mask with exactly ``round(ratio * prod(grid))`` masked blocks.

    Args:
        grid: Block grid, e.g. ``(8, 8, 8)`` for a 128³ patch and 16³ blocks.
        ratio: Fraction of blocks to mask, in ``[0, 1)``.
        generator: Source of randomness (a seeded generator gives a reproducible mask).

    Returns:
        Bool tensor of shape ``grid`` (``True`` = masked).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    n = math.prod(grid)
    n_masked = round(ratio * n)
    order = torch.randperm(n, generator=generator)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[:n_masked]] = True
    return mask.view(*grid)


class BlockMasker:
    """Draws block masks for a batch, one seeded generator per sample.

    Args:
        block_size: Block edge in voxels (an int or one per axis).
        ratio: Fraction of blocks masked (0.75 in Revisiting MAE), or ``(low, high)``: each
            sample's ratio drawn from ``U(low, high)`` by its own generator (S3D-L's variable
            ratio is ``(0.6, 0.9)``).

    ``masker(spatial_shape, seeds)`` returns a ``(B, *grid)`` bool mask; sample ``i`` uses a
    generator seeded with ``seeds[i]``, so a sample's mask depends only on its seed (not on the
    batch it lands in, the worker that loaded it or the DDP rank).
    """

    def __init__(
        self, block_size: int | Sequence[int] = 16, ratio: float | Sequence[float] = 0.75
    ) -> None:
        self.block_size = block_size
        bounds = (ratio, ratio) if isinstance(ratio, numbers.Real) else tuple(ratio)
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise ValueError(f"mask ratio must be a number or (low, high), got {ratio}")
        self.ratio: tuple[float, float] = (float(bounds[0]), float(bounds[1]))
        for r in self.ratio:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"mask ratio must be in [0, 1), got {r}")
        # one draw from the global generator, as this check always made (later initialisation
        # depends on it): runs keep the weights they had before the ratio could vary
        random_block_mask((2,), self.ratio[0])

    def __call__(self, spatial_shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
        grid = block_grid(spatial_shape, self.block_size)
        low, high = self.ratio
        masks = []
        for seed in seeds:
            g = torch.Generator().manual_seed(int(seed))
            ratio = low
            if high > low:
                ratio = low + (high - low) * float(torch.rand((), generator=g))
            masks.append(random_block_mask(grid, ratio, g))
        return torch.stack(masks)


class RecordedMasker:
    """The deterministic twin of :class:`BlockMasker`: always returns a recorded mask.

    Args:
        mask: ``(B, *grid)`` or ``(*grid)`` bool mask (``True`` = masked), repeated over the batch.
        block_size: The block edge the mask was recorded for.
    """

    def __init__(self, mask: torch.Tensor, block_size: int | Sequence[int] = 16) -> None:
        self.mask = mask.to(torch.bool)
        self.block_size = block_size

    def __call__(self, spatial_shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
        grid = block_grid(spatial_shape, self.block_size)
        mask = self.mask if self.mask.dim() == len(grid) + 1 else self.mask[None]
        if tuple(mask.shape[1:]) != grid:
            raise ValueError(f"recorded mask grid {tuple(mask.shape[1:])} != patch grid {grid}")
        return mask.expand(len(seeds), *grid).clone()


def expand_mask(mask: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """A block mask at a feature-map resolution.

    Args:
        mask: ``(B, *grid)`` bool, ``True`` = masked.
        spatial_shape: Target ``(D, H, W)`` or ``(H, W)``.

    Returns:
        ``(B, 1, *spatial_shape)`` float tensor, 1 where masked, 0 where visible.
    """
    visible = (~mask).to(torch.float32)[:, None]
    grid = tuple(mask.shape[1:])
    shape = tuple(int(s) for s in spatial_shape)
    if shape == grid:
        return 1.0 - visible
    if all(s >= g for s, g in zip(shape, grid, strict=True)):
        # finer than the grid: each block covers ceil(s / g) voxels, cropped at the far edge
        reps = [math.ceil(s / g) for s, g in zip(shape, grid, strict=True)]
        out = visible
        for axis, r in enumerate(reps):
            out = out.repeat_interleave(r, dim=axis + 2)
        slices = (slice(None), slice(None), *(slice(0, s) for s in shape))
        return 1.0 - out[slices]
    pool = F.adaptive_max_pool3d if len(shape) == 3 else F.adaptive_max_pool2d
    return 1.0 - pool(visible, shape)
