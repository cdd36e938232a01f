import math

import pytest
import torch

from medssl.ssl.contrastive import (
    GlobalProjectionHead,
    LocalProjectionHead,
    contrastive_masks,
    global_contrastive_loss,
    grid_positions,
    local_contrastive_loss,
    local_masks,
    region_embeddings,
)


def _bool(rows):
    return torch.tensor(rows, dtype=torch.bool)


def _unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def _term(s_pos: float, s_negs: list[float]) -> float:
    """-log(e^s / (e^s + sum e^neg)), written out."""
    return -math.log(math.exp(s_pos) / (math.exp(s_pos) + sum(math.exp(s) for s in s_negs)))


# --- masks -------------------------------------------------------------------------------------
# images: 0 = (vol 0, part 0), 1 = (vol 0, part 1), 2 = (vol 1, part 0), 3 = (vol 1, part 1)
# embeddings 0..3 = view 1 of images 0..3, 4..7 = view 2 of images 0..3
VOL4, PART4 = [0, 0, 1, 1], [0, 1, 0, 1]

GR_POS_4 = [
    [0, 0, 0, 0, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 0, 0],
    [0, 0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0, 0, 0],
    [0, 0, 0, 1, 0, 0, 0, 0],
]
GR_NEG_4 = [
    [0, 1, 1, 1, 0, 1, 1, 1],
    [1, 0, 1, 1, 1, 0, 1, 1],
    [1, 1, 0, 1, 1, 1, 0, 1],
    [1, 1, 1, 0, 1, 1, 1, 0],
    [0, 1, 1, 1, 0, 1, 1, 1],
    [1, 0, 1, 1, 1, 0, 1, 1],
    [1, 1, 0, 1, 1, 1, 0, 1],
    [1, 1, 1, 0, 1, 1, 1, 0],
]
# GD-: same positives; both views of the same-partition image of the other volume removed
GDM_NEG_4 = [
    [0, 1, 0, 1, 0, 1, 0, 1],
    [1, 0, 1, 0, 1, 0, 1, 0],
    [0, 1, 0, 1, 0, 1, 0, 1],
    [1, 0, 1, 0, 1, 0, 1, 0],
    [0, 1, 0, 1, 0, 1, 0, 1],
    [1, 0, 1, 0, 1, 0, 1, 0],
    [0, 1, 0, 1, 0, 1, 0, 1],
    [1, 0, 1, 0, 1, 0, 1, 0],
]
# GD: those removed ones become positives; negatives are the other partition's images
GD_POS_4 = [
    [0, 0, 1, 0, 1, 0, 1, 0],
    [0, 0, 0, 1, 0, 1, 0, 1],
    [1, 0, 0, 0, 1, 0, 1, 0],
    [0, 1, 0, 0, 0, 1, 0, 1],
    [1, 0, 1, 0, 0, 0, 1, 0],
    [0, 1, 0, 1, 0, 0, 0, 1],
    [1, 0, 1, 0, 1, 0, 0, 0],
    [0, 1, 0, 1, 0, 1, 0, 0],
]
GD_NEG_4 = GDM_NEG_4


@pytest.mark.parametrize(
    ("strategy", "pos", "neg"),
    [("GR", GR_POS_4, GR_NEG_4), ("GD-", GR_POS_4, GDM_NEG_4), ("GD", GD_POS_4, GD_NEG_4)],
)
def test_masks_by_hand(strategy, pos, neg):
    got_pos, got_neg = contrastive_masks(torch.tensor(PART4), torch.tensor(VOL4), strategy)
    assert got_pos.dtype == torch.bool and got_pos.shape == (8, 8)
    assert torch.equal(got_pos, _bool(pos))
    assert torch.equal(got_neg, _bool(neg))


def test_masks_same_volume_same_partition_by_hand():
    # images 0 and 1 are both partition 0 of volume 0; image 2 is partition 1 of volume 1
    part, vol = [0, 0, 1], [0, 0, 1]
    pos, neg = contrastive_masks(part, vol, "GD")
    assert torch.equal(
        pos,
        _bool(
            [
                [0, 1, 0, 1, 1, 0],
                [1, 0, 0, 1, 1, 0],
                [0, 0, 0, 0, 0, 1],
                [1, 1, 0, 0, 1, 0],
                [1, 1, 0, 1, 0, 0],
                [0, 0, 1, 0, 0, 0],
            ]
        ),
    )
    assert torch.equal(
        neg,
        _bool(
            [
                [0, 0, 1, 0, 0, 1],
                [0, 0, 1, 0, 0, 1],
                [1, 1, 0, 1, 1, 0],
                [0, 0, 1, 0, 0, 1],
                [0, 0, 1, 0, 0, 1],
                [1, 1, 0, 1, 1, 0],
            ]
        ),
    )
    pos, neg = contrastive_masks(part, vol, "GD-")  # removed: neither positive nor negative
    assert torch.equal(pos, torch.eye(6, dtype=torch.bool).roll(3, dims=1))
    assert torch.equal(
        neg,
        _bool(
            [
                [0, 0, 1, 0, 0, 1],
                [0, 0, 1, 0, 0, 1],
                [1, 1, 0, 1, 1, 0],
                [0, 0, 1, 0, 0, 1],
                [0, 0, 1, 0, 0, 1],
                [1, 1, 0, 1, 1, 0],
            ]
        ),
    )
    _, neg_gr = contrastive_masks(part, vol, "GR")
    assert bool(neg_gr[0, 1]) and bool(neg_gr[0, 4])


def test_masks_reject_bad_input():
    with pytest.raises(ValueError, match="strategy"):
        contrastive_masks([0], [0], "GX")
    with pytest.raises(ValueError, match="differ"):
        contrastive_masks([0, 1], [0], "GD")


# --- global loss -------------------------------------------------------------------------------


def test_global_loss_gr_by_hand():
    # unit vectors e0..e3 (e0, e1 view 1; e2, e3 view 2); z1[0] is scaled to check normalising
    z1 = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.8, -0.6]])
    t = 0.5
    # cosines: e0e1 = 0, e0e2 = .6, e0e3 = .8, e1e2 = .8, e1e3 = -.6, e2e3 = 0
    expected = (
        _term(0.6 / t, [0.0, 0.8 / t])  # anchor e0: pos e2, neg e1, e3
        + _term(-0.6 / t, [0.0, 0.8 / t])  # anchor e1: pos e3, neg e0, e2
        + _term(0.6 / t, [0.8 / t, 0.0])  # anchor e2: pos e0, neg e1, e3
        + _term(-0.6 / t, [0.8 / t, 0.0])  # anchor e3: pos e1, neg e0, e2
    ) / 4
    loss = global_contrastive_loss(z1, z2, [0, 1], [0, 1], "GR", temperature=t)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_global_loss_gd_and_gdm_by_hand():
    # images 0 (vol 0, part 0), 1 (vol 1, part 0), 2 (vol 2, part 1); 2D unit embeddings
    angles = [0.0, 0.5, 2.0, 0.3, 1.1, 2.6]  # embeddings 0..5 = [view 1 of 0..2, view 2 of 0..2]
    z = torch.tensor([_unit(a) for a in angles])
    t = 0.2

    def s(i, j):
        return math.cos(angles[i] - angles[j]) / t

    gd_pos = {0: [1, 3, 4], 1: [0, 3, 4], 2: [5], 3: [0, 1, 4], 4: [0, 1, 3], 5: [2]}
    gd_neg = {0: [2, 5], 1: [2, 5], 2: [0, 1, 3, 4], 3: [2, 5], 4: [2, 5], 5: [0, 1, 3, 4]}
    expected_gd = (
        sum(
            sum(_term(s(i, p), [s(i, k) for k in gd_neg[i]]) for p in gd_pos[i]) / len(gd_pos[i])
            for i in range(6)
        )
        / 6
    )
    gdm_pos = {0: [3], 1: [4], 2: [5], 3: [0], 4: [1], 5: [2]}
    expected_gdm = sum(_term(s(i, gdm_pos[i][0]), [s(i, k) for k in gd_neg[i]]) for i in range(6))
    expected_gdm /= 6
    part, vol = [0, 0, 1], [0, 1, 2]
    gd = global_contrastive_loss(z[:3], z[3:], part, vol, "GD", temperature=t)
    gdm = global_contrastive_loss(z[:3], z[3:], part, vol, "GD-", temperature=t)
    assert gd.item() == pytest.approx(expected_gd, rel=1e-5)
    assert gdm.item() == pytest.approx(expected_gdm, rel=1e-5)


def test_global_loss_temperature():
    # views identical, images orthogonal: l = log(1 + (2N - 2) exp(-1 / t)) for every pair
    z = torch.eye(3)
    for t in (0.1, 1.0):
        loss = global_contrastive_loss(z, z.clone(), [0, 1, 2], [0, 1, 2], "GR", temperature=t)
        assert loss.item() == pytest.approx(math.log(1 + 4 * math.exp(-1 / t)), rel=1e-5)
    low = global_contrastive_loss(z, z, [0, 1, 2], [0, 1, 2], "GR", temperature=0.1)
    high = global_contrastive_loss(z, z, [0, 1, 2], [0, 1, 2], "GR", temperature=1.0)
    assert low < high
    # tiny temperatures stay finite (log-sum-exp)
    z2 = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    tiny = global_contrastive_loss(z, z2, [0, 1, 2], [0, 1, 2], "GR", temperature=1e-3)
    assert torch.isfinite(tiny) and tiny.item() == pytest.approx(
        4000.0 / 6, rel=1e-3
    )  # 4 anchors ~1/t, 2 ~0


@pytest.mark.parametrize("strategy", ["GR", "GD-", "GD"])
def test_global_loss_no_negatives_is_zero_without_nan(strategy):
    # GR with N = 1 has no negatives; with every image in one partition, neither has GD
    z1 = torch.randn(1, 4, requires_grad=True)
    z2 = torch.randn(1, 4, requires_grad=True)
    loss = global_contrastive_loss(z1, z2, [0], [0], strategy)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    z1 = torch.randn(3, 4, requires_grad=True)
    loss = global_contrastive_loss(z1, torch.randn(3, 4), [1, 1, 1], [0, 1, 2], "GD")
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z1.grad).all()


def test_global_loss_gradient_and_alignment():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 8, generator=g, requires_grad=True)
    part, vol = [0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1]
    loss = global_contrastive_loss(z1, torch.randn(6, 8, generator=g), part, vol, "GD")
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    base = torch.randn(6, 8, generator=g)
    aligned = global_contrastive_loss(
        base, base + 0.01 * torch.randn(6, 8, generator=g), part, vol, "GR"
    )
    random = global_contrastive_loss(base, torch.randn(6, 8, generator=g), part, vol, "GR")
    assert aligned < random


def test_global_loss_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels"):
        global_contrastive_loss(torch.randn(3, 4), torch.randn(3, 4), [0, 1], [0, 1])
    with pytest.raises(ValueError, match="temperature"):
        global_contrastive_loss(torch.randn(2, 4), torch.randn(2, 4), [0, 1], [0, 1], "GR", 0.0)


# --- regions -----------------------------------------------------------------------------------


def test_grid_positions():
    for size, rows in [(12, [0, 3, 6, 9]), (13, [0, 3, 6, 9]), (14, [1, 4, 7, 10])]:
        pos = grid_positions((size, size), 3)
        assert pos.shape == (16, 2) and pos.dtype == torch.int64
        assert pos[:, 0].unique().tolist() == rows
        assert pos[:4].tolist() == [[rows[0], c] for c in rows]  # row-major
    assert grid_positions((6, 9, 12), 3).shape == (2 * 3 * 4, 3)
    assert grid_positions((12, 12), 3, stride=6).tolist() == [[1, 1], [1, 7], [7, 1], [7, 7]]


def test_region_embeddings_are_window_means():
    f = torch.arange(2 * 3 * 7 * 8, dtype=torch.float32).reshape(2, 3, 7, 8) ** 1.5
    pos = torch.tensor([[0, 0], [4, 5], [2, 1]])
    e = region_embeddings(f, 3, pos)
    assert e.shape == (2, 3, 3)
    for k, (y, x) in enumerate(pos.tolist()):
        torch.testing.assert_close(e[:, k], f[:, :, y : y + 3, x : x + 3].mean(dim=(2, 3)))
    f3 = torch.randn(2, 4, 5, 6, 7)
    pos3 = torch.tensor([[0, 0, 0], [3, 4, 5], [1, 2, 0]])
    e3 = region_embeddings(f3, 2, pos3)
    assert e3.shape == (2, 3, 4)
    for k, (z, y, x) in enumerate(pos3.tolist()):
        torch.testing.assert_close(
            e3[:, k], f3[:, :, z : z + 2, y : y + 2, x : x + 2].mean(dim=(2, 3, 4))
        )
    const = torch.full((1, 2, 6, 6), 3.0)
    torch.testing.assert_close(region_embeddings(const), torch.full((1, 4, 2), 3.0))
    with pytest.raises(ValueError, match="leaves the map"):
        region_embeddings(f, 3, torch.tensor([[5, 0]]))


def test_local_masks():
    image_pos, region_neg = local_masks(PART4, VOL4, "LR", 3)
    assert torch.equal(image_pos, _bool(GR_POS_4))
    assert torch.equal(
        region_neg, _bool([[0, 1, 1, 0, 1, 1], [1, 0, 1, 1, 0, 1], [1, 1, 0, 1, 1, 0]])
    )
    assert torch.equal(local_masks(PART4, VOL4, "LD", 3)[0], _bool(GD_POS_4))


# --- local loss --------------------------------------------------------------------------------


def _local_reference(regions, n_images, positives, t):
    """Pure-Python local loss. regions[(view, image, k)] is a 2D unit angle."""
    k_count = len({k for (_, _, k) in regions})
    total, anchors = 0.0, 0
    for (v, n, k), a in regions.items():
        negs = [
            math.cos(a - regions[(v2, n, k2)]) / t
            for v2 in (0, 1)
            for k2 in range(k_count)
            if k2 != k
        ]
        pos = [math.cos(a - regions[(v2, m, k)]) / t for (v2, m) in positives(v, n)]
        total += sum(_term(p, negs) for p in pos) / len(pos)
        anchors += 1
    assert anchors == 2 * n_images * k_count
    return total / anchors


def _maps_from_angles(regions, n_images, k_count):
    # one pixel per region: maps of shape (N, 2, 1, K), region_size 1, positions (0, k)
    f = torch.zeros(2, n_images, 2, 1, k_count)
    for (v, n, k), a in regions.items():
        f[v, n, :, 0, k] = torch.tensor(_unit(a)) * (1 + k)  # scale must not matter
    return f[0], f[1], torch.tensor([[0, k] for k in range(k_count)])


def test_local_loss_by_hand():
    t = 0.5
    # N = 2 images, same partition, different volumes; K = 3 one-pixel regions
    angles = [0.1, 1.3, 2.9, 0.4, 1.0, 3.3, 0.2, 1.9, 2.5, 0.7, 1.4, 2.2]
    regions = {
        (v, n, k): angles[6 * v + 3 * n + k] for v in (0, 1) for n in (0, 1) for k in range(3)
    }
    f1, f2, pos = _maps_from_angles(regions, 2, 3)
    lr = local_contrastive_loss(f1, f2, [0, 0], [0, 1], "LR", 1, pos, temperature=t)
    ld = local_contrastive_loss(f1, f2, [0, 0], [0, 1], "LD", 1, pos, temperature=t)
    exp_lr = _local_reference(regions, 2, lambda v, n: [(1 - v, n)], t)
    exp_ld = _local_reference(regions, 2, lambda v, n: [(1 - v, n), (0, 1 - n), (1, 1 - n)], t)
    assert lr.item() == pytest.approx(exp_lr, rel=1e-5)
    assert ld.item() == pytest.approx(exp_ld, rel=1e-5)
    assert lr.item() != pytest.approx(ld.item(), rel=1e-3)
    # different partitions: LD has no extra positives and equals LR
    lr2 = local_contrastive_loss(f1, f2, [0, 1], [0, 1], "LR", 1, pos, temperature=t)
    ld2 = local_contrastive_loss(f1, f2, [0, 1], [0, 1], "LD", 1, pos, temperature=t)
    torch.testing.assert_close(lr2, ld2)
    assert lr2.item() == pytest.approx(exp_lr, rel=1e-5)


@pytest.mark.parametrize("shape", [(3, 4, 12, 12), (3, 4, 6, 6, 6)])
def test_local_loss_shapes_and_gradient(shape):
    g = torch.Generator().manual_seed(1)
    f1 = torch.randn(shape, generator=g, requires_grad=True)
    f2 = (f1.detach() + 0.1 * torch.randn(shape, generator=g)).requires_grad_(True)
    part, vol = [0, 0, 1], [0, 1, 1]
    assert region_embeddings(f1).shape == (3, 16 if len(shape) == 4 else 8, 4)
    loss = local_contrastive_loss(f1, f2, part, vol, "LD")
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert f1.grad.abs().sum() > 0 and torch.isfinite(f2.grad).all()
    lr = local_contrastive_loss(f1, f2, part, vol, "LR")
    assert not torch.isclose(lr, loss)
    # aligned views give a lower loss than unrelated ones
    random = local_contrastive_loss(f1, torch.randn(shape, generator=g), part, vol, "LR")
    assert lr < random


def test_local_loss_single_region_is_zero():
    f = torch.randn(2, 3, 3, 3, requires_grad=True)
    loss = local_contrastive_loss(f, f.detach() + 1, [0, 0], [0, 1], "LD")
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(f.grad).all()


# --- heads -------------------------------------------------------------------------------------


def test_global_head_shapes_and_pooling():
    head = GlobalProjectionHead(6, hidden=16, out=5)
    x2 = torch.randn(2, 6, 4, 5)
    x3 = torch.randn(2, 6, 3, 4, 5)
    assert head(x2).shape == (2, 5)
    assert head(x3).shape == (2, 5)
    # global average pooling: spatial order does not matter, pooled input gives the same
    perm = x3.flatten(2)[:, :, torch.randperm(60)].reshape(x3.shape)
    torch.testing.assert_close(head(perm), head(x3))
    torch.testing.assert_close(head(x3.mean(dim=(2, 3, 4))), head(x3))
    assert GlobalProjectionHead(6).mlp[-1].out_features == 128
    with pytest.raises(ValueError, match="expected"):
        head(torch.randn(2, 5, 4, 4))


@pytest.mark.parametrize(("dims", "shape"), [(2, (2, 6, 5, 7)), (3, (2, 6, 3, 5, 7))])
def test_local_head_shapes(dims, shape):
    head = LocalProjectionHead(6, hidden=8, out=4, spatial_dims=dims)
    y = head(torch.randn(shape))
    assert y.shape == (2, 4, *shape[2:])
    with pytest.raises(ValueError, match="expected"):
        head(torch.randn(2, 6, *([4] * (5 - dims))))


def test_local_head_rejects_bad_dims():
    with pytest.raises(ValueError, match="spatial_dims"):
        LocalProjectionHead(6, 8, 4, spatial_dims=1)
