"""The Filter2Noise loss terms."""

from __future__ import annotations

import torch

from medssl.denoise.filter2noise import dog_kernel, edge_loss, filter2noise_loss


def test_dog_kernel_is_zero_mean_and_symmetric():
    k = dog_kernel(7, 9.0, 10.0)
    assert k.shape == (7, 7)
    assert abs(float(k.sum())) < 1e-6
    torch.testing.assert_close(k, k.T)
    assert float(k[3, 3]) > 0 > float(k[0, 0])  # centre up, corners down


def test_edge_loss_zero_for_identical_images_and_noise_floor_flattens_targets():
    y = torch.randn(1, 1, 16, 16)
    k = dog_kernel()
    assert float(edge_loss(y, y, k)) == 0.0
    flat = torch.zeros_like(y)
    plain = float(edge_loss(y, flat, k))
    floored = float(edge_loss(y, flat, k, noise_floor=1.0))  # floor above every response
    assert plain > 0 and floored == 0.0


def test_filter2noise_loss_terms():
    k = dog_kernel()
    y = torch.randn(2, 1, 8, 8)
    ident = filter2noise_loss(lambda x, c: x, y, None, lam=0.0, kernel=k, shuffle=False)
    # identity denoiser: d_i = g_i(y) = g_i(X): terms 2 and 3 vanish, 1 and 4 are |g1 - g2|
    from medssl.denoise.filter2noise import pair_downsample

    g1, g2 = pair_downsample(y)
    expected = 2 * (g1 - g2).abs().mean() / 3
    torch.testing.assert_close(ident.total, expected)
    assert ident.edge == 0.0
    const = filter2noise_loss(lambda x, c: torch.zeros_like(x), y, None, lam=1.0, kernel=k)
    assert const.consistency == 0.0 and const.edge > 0  # a flat output is only held by the edges


def test_loss_gradients_reach_the_model():
    k = dog_kernel()
    w = torch.tensor(0.5, requires_grad=True)
    parts = filter2noise_loss(lambda x, c: x * w, torch.randn(1, 1, 8, 8), None, lam=10.0, kernel=k)
    parts.total.backward()
    assert w.grad is not None and torch.isfinite(w.grad)


def test_views_in_one_batch_give_the_same_loss_and_gradients():
    from medssl.denoise.filter2noise import build_model, preset
    from medssl.denoise.filter2noise.predictors import coord_grid

    torch.manual_seed(0)
    model = build_model(preset("medssl").model)
    for p in model.parameters():  # a non-trivial predictor (its last layer starts at zero)
        torch.nn.init.normal_(p, std=0.2)
    y = 0.05 * torch.randn(3, 1, 16, 16)
    coords = coord_grid((16, 16)).expand(3, -1, -1, -1).clone()
    coords[1] += 0.1  # crops with their own positions
    k = dog_kernel()
    results = []
    for batch_views in (False, True):
        model.zero_grad()
        parts = filter2noise_loss(model, y, coords, lam=100.0, kernel=k, batch_views=batch_views)
        parts.total.backward()
        results.append((parts.total.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
