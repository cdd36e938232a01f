"""Pixel-pair downsampling, the local shuffle and even padding."""

from __future__ import annotations

import pytest
import torch

from medssl.denoise.filter2noise import local_shuffle, pad_to_even, pair_downsample


def test_pair_downsample_takes_diagonal_means():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    g1, g2 = pair_downsample(x)
    # block [[0, 1], [4, 5]]: diagonals (0 + 5) / 2 and (1 + 4) / 2
    assert g1[0, 0, 0, 0] == 2.5 and g2[0, 0, 0, 0] == 2.5
    assert g1.shape == (1, 1, 2, 2)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 7.0]]]])
    g1, g2 = pair_downsample(x)
    assert float(g1) == 4.0 and float(g2) == 2.5


def test_pair_downsample_works_per_slice_in_3d_and_refuses_odd_sizes():
    x = torch.randn(2, 1, 3, 6, 8)
    g1, _ = pair_downsample(x)
    assert g1.shape == (2, 1, 3, 3, 4)
    torch.testing.assert_close(g1[:, :, 1], pair_downsample(x[:, :, 1])[0])
    with pytest.raises(ValueError, match="even"):
        pair_downsample(torch.randn(1, 1, 5, 4))


def test_local_shuffle_swaps_the_most_similar_pair():
    # block values: tl=10, tr=50, bl=11, br=90 -> the closest pair is (tl, bl): swapped
    x = torch.tensor([[[[10.0, 50.0], [11.0, 90.0]]]])
    y = local_shuffle(x)
    assert y.tolist() == [[[[11.0, 50.0], [10.0, 90.0]]]]
    # every block is a permutation of itself; one pair changed places
    x = torch.randn(2, 1, 8, 6)
    y = local_shuffle(x)
    xb = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 1, 4, 3, 4)
    yb = y.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 1, 4, 3, 4)
    torch.testing.assert_close(xb.sort(-1).values, yb.sort(-1).values)
    assert ((xb != yb).sum(-1) == 2).all()


def _shuffle_by_loops(x: torch.Tensor) -> torch.Tensor:
    """The local shuffle written out block by block: the pair with the smallest L1 distance
    summed over the channels (first in the documented order on ties) swaps, in every channel."""
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]  # positions 0..3: tl, tr, bl, br
    y = x.clone()
    for b in range(x.shape[0]):
        for i in range(0, x.shape[-2], 2):
            for j in range(0, x.shape[-1], 2):
                block = [x[b, :, i + di, j + dj] for di, dj in cells]
                dist = [float((block[p] - block[q]).abs().sum()) for p, q in pairs]
                p, q = pairs[dist.index(min(dist))]
                (pi, pj), (qi, qj) = cells[p], cells[q]
                y[b, :, i + pi, j + pj] = block[q]
                y[b, :, i + qi, j + qj] = block[p]
    return y


def test_local_shuffle_uses_all_channels_and_is_deterministic():
    # channel 0 alone would swap (tl, tr); summed over both channels (bl, br) is closest
    x = torch.tensor([[[[0.0, 1.0], [5.0, 7.0]], [[0.0, 9.0], [20.0, 20.5]]]])
    assert local_shuffle(x).tolist() == [[[[0.0, 1.0], [7.0, 5.0]], [[0.0, 9.0], [20.5, 20.0]]]]
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(local_shuffle(x), _shuffle_by_loops(x), rtol=0, atol=0)
    torch.testing.assert_close(local_shuffle(x), local_shuffle(x), rtol=0, atol=0)
    x = torch.randn(1, 2, 3, 4, 6, generator=torch.Generator().manual_seed(1))  # 3D: per slice
    y = local_shuffle(x)
    for d in range(3):
        torch.testing.assert_close(y[:, :, d], _shuffle_by_loops(x[:, :, d]), rtol=0, atol=0)


def test_pad_to_even():
    x = torch.randn(1, 1, 5, 7)
    y, pads = pad_to_even(x)
    assert y.shape == (1, 1, 6, 8) and pads == (1, 1)
    torch.testing.assert_close(y[..., :5, :7], x)
    y, pads = pad_to_even(torch.randn(1, 1, 4, 4))
    assert pads == (0, 0)
