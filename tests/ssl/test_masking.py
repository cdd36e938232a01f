import pytest
import torch

from medssl.ssl.mae3d import BlockMasker, RecordedMasker, block_grid, expand_mask
from medssl.ssl.mae3d.masking import random_block_mask


def test_mask_has_exactly_the_ratio_of_blocks_and_follows_its_seed():
    g = torch.Generator().manual_seed(3)
    m = random_block_mask((8, 8, 8), 0.75, g)
    assert m.shape == (8, 8, 8) and m.dtype == torch.bool
    assert int(m.sum()) == 384
    again = random_block_mask((8, 8, 8), 0.75, torch.Generator().manual_seed(3))
    other = random_block_mask((8, 8, 8), 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(m, again)
    assert not torch.equal(m, other)


def test_ratio_out_of_range_is_refused():
    with pytest.raises(ValueError, match="mask ratio"):
        BlockMasker(16, 1.0)


def test_a_samples_mask_depends_only_on_its_seed():
    masker = BlockMasker(16, 0.75)
    a = masker((64, 64, 64), [11, 12, 13])
    b = masker((64, 64, 64), [13, 11])
    assert a.shape == (3, 4, 4, 4)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])


def test_block_grid_rounds_up():
    assert block_grid((160, 160, 160), 16) == (10, 10, 10)
    assert block_grid((40, 33), (16, 16)) == (3, 3)


def test_expand_mask_repeats_blocks_at_finer_resolution():
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    mask[0, 1, 0, 1] = True
    full = expand_mask(mask, (32, 32, 32))
    assert full.shape == (1, 1, 32, 32, 32)
    assert full[0, 0, 16:, :16, 16:].eq(1).all()
    assert full.sum() == 16**3
    half = expand_mask(mask, (8, 8, 8))
    assert half[0, 0, 4:, :4, 4:].eq(1).all() and half.sum() == 4**3


def test_expand_mask_at_coarser_resolution_keeps_cells_with_any_visible_block():
    mask = torch.ones(1, 4, 4, 4, dtype=torch.bool)
    mask[0, 0, 0, 0] = False  # one visible block in the first 2x2x2 cell
    coarse = expand_mask(mask, (2, 2, 2))
    assert coarse[0, 0, 0, 0, 0] == 0  # visible
    assert coarse.sum() == 7


def test_recorded_masker_replays_its_mask_and_checks_the_grid():
    mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = True
    rec = RecordedMasker(mask, block_size=16)
    out = rec((32, 32, 32), [5, 6])
    assert out.shape == (2, 2, 2, 2) and torch.equal(out[0], mask) and torch.equal(out[1], mask)
    with pytest.raises(ValueError, match="grid"):
        rec((64, 64, 64), [0])


def test_a_variable_mask_ratio_is_drawn_per_sample_from_its_seed():
    """S3D-L: each sample's ratio from U(0.6, 0.9), repeatable from the sample's seed."""
    masker = BlockMasker(8, (0.6, 0.9))
    masks = masker((64, 64, 64), list(range(40)))  # 8^3 = 512 blocks per sample
    ratios = masks.flatten(1).float().mean(1)
    assert ratios.min() >= 0.6 - 1 / 512 and ratios.max() <= 0.9 + 1 / 512
    assert ratios.max() - ratios.min() > 0.15  # spread over the interval
    assert torch.equal(masker((64, 64, 64), [7, 3]), masks[[7, 3]])
    assert BlockMasker(8, 0.75)((64, 64, 64), [1]).float().mean() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="low, high"):
        BlockMasker(8, (0.9, 0.6))
