import pytest
import torch
from torch import nn

from medssl.models import build_network
from medssl.ssl.mae3d import MAEObjective, MaskedAutoencoder, RecordedMasker, masked_mse
from medssl.ssl.mae3d.masking import expand_mask
from medssl.ssl.mae3d.sparse import MaskState, SparseConv, SparseInstanceNorm, sparsify


def _mae(sparse: bool, ratio: float = 0.75) -> MaskedAutoencoder:
    return MaskedAutoencoder(
        build_network("tiny", seed=0), sparse=sparse, block_size=8, mask_ratio=ratio
    )


def test_masked_mse_ignores_visible_voxels():
    pred = torch.randn(2, 1, 8, 8, 8, requires_grad=True)
    target = torch.randn(2, 1, 8, 8, 8)
    mask = torch.zeros(2, 1, 8, 8, 8)
    mask[:, :, :4] = 1
    loss = masked_mse(pred, target, mask)
    manual = ((pred - target) ** 2)[:, :, :4].mean()
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert pred.grad[:, :, 4:].abs().max() == 0
    assert pred.grad[:, :, :4].abs().max() > 0


@pytest.mark.parametrize("sparse", [False, True])
def test_reconstruction_never_sees_masked_voxels(sparse):
    torch.manual_seed(0)
    mae = _mae(sparse)
    x = torch.randn(2, 1, 32, 32, 32)
    out = mae(x, seeds=[1, 2])
    assert out.mask.mean().item() == pytest.approx(0.75)
    x2 = x + out.mask * 100 * torch.randn_like(x)  # change only masked voxels
    out2 = mae(x2, block_mask=out.block_mask)
    torch.testing.assert_close(out.reconstruction, out2.reconstruction)
    # and the loss is computed on masked voxels only
    recon = out.reconstruction.detach().clone().requires_grad_(True)
    masked_mse(recon, x, out.mask).backward()
    assert recon.grad[out.mask.bool()].abs().sum() > 0
    assert recon.grad[~out.mask.bool()].abs().sum() == 0


def test_sparse_instance_norm_uses_visible_voxels_only():
    state = MaskState()
    norm = nn.InstanceNorm3d(3, affine=True)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    sparsify(norm, state)
    assert isinstance(norm, SparseInstanceNorm)
    mask = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    mask[0, 0] = True
    mask[1, :, 1] = True
    state.set(mask)
    x = torch.randn(2, 3, 8, 8, 8) * 3 + 1
    y = norm(x)
    vis = 1 - expand_mask(mask, (8, 8, 8))
    for b in range(2):
        sel = vis[b, 0].bool()
        v = x[b][:, sel]  # (C, n_visible)
        ref = (v - v.mean(1, keepdim=True)) / torch.sqrt(
            v.var(1, unbiased=False, keepdim=True) + 1e-5
        )
        ref = ref * norm.weight[:, None] + norm.bias[:, None]
        torch.testing.assert_close(y[b][:, sel], ref, atol=1e-5, rtol=1e-5)
        assert y[b][:, ~sel].abs().max() == 0


def test_s3d_encoder_features_are_zero_under_masked_blocks():
    mae = _mae(True)
    x = torch.randn(1, 1, 32, 32, 32)
    mask = torch.zeros(1, 4, 4, 4, dtype=torch.bool)
    mask[0, :2] = True
    mae._state.set(mask)
    skips = mae.network.encoder(x * (1 - expand_mask(mask, x.shape[2:])))
    mae._state.set(None)
    for s in skips:
        if s.shape[2] >= 4:  # stages at or finer than the block grid
            m = expand_mask(mask, s.shape[2:]).bool()[:, 0]
            assert s.permute(1, 0, 2, 3, 4)[:, m].abs().max() == 0
            assert s.permute(1, 0, 2, 3, 4)[:, ~m].abs().max() > 0


def test_s3d_without_masking_is_the_plain_network():
    torch.manual_seed(0)
    mae = _mae(True, ratio=0.0)
    plain = build_network("tiny", seed=0)
    x = torch.randn(2, 1, 32, 32, 32)
    out = mae(x, seeds=[0, 1])
    torch.testing.assert_close(out.reconstruction, plain(x), atol=1e-5, rtol=1e-4)


def test_s3d_keeps_the_plain_state_dict_and_can_be_undone():
    mae = _mae(True)
    plain = build_network("tiny", seed=0)
    assert list(mae.network.state_dict()) == list(plain.state_dict())
    assert any(isinstance(m, SparseConv) for m in mae.network.modules())
    assert "mask_tokens.0" in mae.state_dict()
    net = mae.plain_network()
    assert not any(isinstance(m, SparseConv | SparseInstanceNorm) for m in net.modules())
    assert {type(m) for m in net.modules()} == {type(m) for m in plain.modules()}


def test_dense_and_sparse_differ_and_both_train():
    x = torch.randn(2, 1, 32, 32, 32)
    mask = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    mask[:, ::2] = True
    losses = {}
    for sparse in (False, True):
        mae = MaskedAutoencoder(
            build_network("tiny", seed=0),
            sparse=sparse,
            block_size=8,
            masker=RecordedMasker(mask, block_size=8),
        )
        opt = torch.optim.Adam(mae.parameters(), lr=1e-3)
        first = None
        for _ in range(5):
            out = mae(x, seeds=[0, 1])
            loss = mae.loss(x, out)
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[sparse] = (first, loss.item())
        if sparse:
            assert mae.mask_tokens[0].grad is not None
    assert losses[False][0] != pytest.approx(losses[True][0])
    assert losses[False][1] < losses[False][0] and losses[True][1] < losses[True][0]


def test_patch_must_be_a_multiple_of_the_block():
    mae = _mae(False)
    with pytest.raises(ValueError, match="multiple"):
        mae(torch.randn(1, 1, 32, 32, 36))


def test_s3d_refuses_norms_whose_statistics_would_see_masked_voxels():
    net = build_network("tiny", seed=0)
    net.encoder.stem.convs[0].norm = nn.BatchNorm3d(8)
    with pytest.raises(ValueError, match="instance norms only"):
        MaskedAutoencoder(net, sparse=True, block_size=8)


@pytest.mark.parametrize("sparse", [False, True])
def test_the_objective_scores_the_masked_voxels_only(sparse):
    """The training loss against a hand computation: the mean squared error over the voxels of
    the masked blocks (scoring the visible ones instead passed every other test)."""
    torch.manual_seed(0)
    block = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    block[0, :2] = True  # sample 0: the first half of the block rows
    block[1, :, :, 1::2] = True  # sample 1: every other block column
    mae = MaskedAutoencoder(
        build_network("tiny", seed=0),
        sparse=sparse,
        block_size=8,
        masker=RecordedMasker(block, block_size=8),
    )
    objective = MAEObjective(mae)
    x = torch.randn(2, 1, 32, 32, 32)
    loss = objective({"image": x, "seed": torch.tensor([1, 2])})["loss"]
    recon = mae(x, block_mask=block).reconstruction
    voxels = block.repeat_interleave(8, 1).repeat_interleave(8, 2).repeat_interleave(8, 3)
    hand = ((recon - x)[:, 0][voxels] ** 2).mean()
    torch.testing.assert_close(loss, hand)
    assert not torch.allclose(loss, ((recon - x)[:, 0][~voxels] ** 2).mean())


def test_s3d_densify_step_trains_and_stays_out_of_the_export():
    """SparK's densify step: per-stage norm + conv on the filled features, pretraining only."""
    torch.manual_seed(0)
    plain = MaskedAutoencoder(build_network("tiny", seed=0), sparse=True, block_size=8)
    dense = MaskedAutoencoder(
        build_network("tiny", seed=0), sparse=True, block_size=8, densify=True
    )
    x = torch.randn(2, 1, 32, 32, 32)
    out = dense(x, seeds=[1, 2])
    assert not torch.allclose(out.reconstruction, plain(x, seeds=[1, 2]).reconstruction)
    masked_mse(out.reconstruction, x, out.mask).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dense.densify.parameters())
    # still blind to the masked voxels
    x2 = x + out.mask * 100 * torch.randn_like(x)
    torch.testing.assert_close(
        dense(x2, block_mask=out.block_mask).reconstruction, out.reconstruction
    )
    assert dense.plain_network().state_dict().keys() == plain.plain_network().state_dict().keys()
    with pytest.raises(ValueError, match="sparse"):
        MaskedAutoencoder(build_network("tiny", seed=0), sparse=False, densify=True)


def test_densify_with_the_dense_mae_is_a_clear_error():
    from medssl.errors import InputError
    from medssl.ssl.config import load_config
    from medssl.ssl.mae3d.spec import build_objective

    with pytest.raises(InputError, match="densify is S3D's"):
        build_objective("mae", load_config({"mae": {"densify": True}}), {})
