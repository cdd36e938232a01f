"""LVM-Med graph matching: the QAP solver against brute force, I-MLE against its definition,
the graph blocks and the full loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.ssl.amp import loss_scale
from medssl.ssl.graphmatch import (
    GraphMatchingLoss,
    GraphRefiner,
    brute_force_qap,
    edge_affinity_matrix,
    graph_groups,
    hamming_loss,
    imle_match,
    knn_adjacency,
    linear_assignment,
    local_similarity,
    matching_accuracy,
    perturbation_noise,
    qap_affinity_matrix,
    qap_objective,
    solve_qap,
)


def _path_instance() -> np.ndarray:
    """n = 4: G1 = G2 = the path 0-1-2-3 (edge affinity 2), vertex scores preferring 0<->1.

    First order (diagonal only): swapping 0 and 1 scores 4, the identity 2. With edges the
    identity keeps all 3 edges (2 * 2 * 3 = 12, total 14); the swap keeps 2 (8, total 12);
    the path reversal keeps 3 but scores 0 on vertices (12). The identity is the unique optimum.
    """
    n = 4
    adj = np.zeros((n, n))
    for i in range(n - 1):
        adj[i, i + 1] = adj[i + 1, i] = 1.0
    edge = 2.0 * np.einsum("ij,ab->iajb", adj, adj).reshape(n * n, n * n)
    vertex = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    return edge + np.diag(vertex.reshape(-1))


def test_qap_optimum_differs_from_first_order_and_solver_finds_it():
    K = _path_instance()
    n = 4
    X_bf, v_bf = brute_force_qap(K)
    X_first = linear_assignment(np.diag(K).reshape(n, n))
    assert not np.array_equal(X_bf, X_first)
    assert np.array_equal(X_bf, np.eye(n)) and v_bf == pytest.approx(14.0)
    assert qap_objective(K, X_first) == pytest.approx(12.0)

    X = solve_qap(K, n)
    assert np.array_equal(X, X_bf)
    Xt = solve_qap(torch.from_numpy(K).float())  # tensors in, tensor out, n inferred
    assert isinstance(Xt, torch.Tensor) and Xt.dtype == torch.float32
    assert torch.equal(Xt, torch.eye(n))


def _random_instance(rng: np.random.Generator, n: int, family: str) -> np.ndarray:
    if family == "gaussian":  # unstructured: a hard random QAP
        K = rng.standard_normal((n * n, n * n))
        return K + K.T
    # graph matching: G2 is a permuted G1 with flipped edges, positive random affinities
    a1 = np.triu((rng.random((n, n)) < 0.5).astype(float), 1)
    a1 = a1 + a1.T
    P = np.eye(n)[rng.permutation(n)]
    a2 = np.abs(P.T @ a1 @ P - (rng.random((n, n)) < 0.15))
    a2 = np.triu(a2, 1)
    a2 = a2 + a2.T
    E = np.einsum("ij,ab->iajb", a1, a2).reshape(n * n, n * n) * rng.random((n * n, n * n))
    return 0.5 * (E + E.T) + np.diag(2.0 * rng.random(n * n))


@pytest.mark.parametrize("family", ["gaussian", "graph"])
def test_solver_reaches_brute_force_on_random_instances(family):
    exact = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n = 5 + seed % 2
        K = _random_instance(rng, n, family)
        _, best = brute_force_qap(K)
        X = solve_qap(K)
        assert np.array_equal(X.sum(0), np.ones(n)) and np.array_equal(X.sum(1), np.ones(n))
        value = qap_objective(K, X)
        first_order = qap_objective(K, linear_assignment(np.diag(K).reshape(n, n)))
        assert value >= first_order - 1e-9
        assert value <= best + 1e-9
        exact += value >= best - 1e-9
    assert exact >= 18, f"solver optimal on {exact}/20 instances"


def test_solver_is_deterministic():
    K = _random_instance(np.random.default_rng(123), 6, "gaussian")
    assert np.array_equal(solve_qap(K), solve_qap(K.copy()))


def _imle_by_hand(U0, P0, W, lam, eps_forward, eps_target):
    """I-MLE's definition, solving each QAP directly: sums over samples of z - z' and of
    vec(z)vec(z)ᵀ - vec(z')vec(z')ᵀ, with z' solved at the target U0 - lam * W."""
    n = U0.shape[0]
    grad_u = torch.zeros(n, n, dtype=torch.float64)
    grad_p = torch.zeros(n * n, n * n, dtype=torch.float64)
    zs = []
    for e, e_t in zip(eps_forward, eps_target, strict=True):
        z_s = solve_qap(P0 + torch.diag((U0 + e).reshape(-1)), n)
        z_t = solve_qap(P0 + torch.diag((U0 - lam * W + e_t).reshape(-1)), n)
        zs.append(z_s)
        grad_u += z_s - z_t
        v, vt = z_s.reshape(-1), z_t.reshape(-1)
        grad_p += torch.outer(v, v) - torch.outer(vt, vt)
    return torch.stack(zs).mean(0), grad_u, grad_p


@pytest.mark.parametrize(("samples", "divide"), [(1, False), (3, True)])
def test_imle_gradient_matches_its_definition(samples, divide):
    n, lam = 5, 2.0
    g = torch.Generator().manual_seed(0)
    U0 = torch.randn(n, n, generator=g, dtype=torch.float64)
    P0 = 0.2 * torch.rand(n * n, n * n, generator=g, dtype=torch.float64)
    P0 = 0.5 * (P0 + P0.T)
    P0.fill_diagonal_(0.0)
    # the downstream loss L = <W, z>, so dL/dz = W
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    U = U0.clone().requires_grad_(True)
    P = P0.clone().requires_grad_(True)

    z = imle_match(
        U, P, lam=lam, samples=samples, generator=torch.Generator().manual_seed(7),
        divide_by_lam=divide,
    )  # fmt: skip
    (W * z).sum().backward()

    eps = perturbation_noise((n, n), "gumbel", samples, generator=torch.Generator().manual_seed(7))
    z_hand, grad_u, grad_p = _imle_by_hand(U0, P0, W, lam, eps, eps)
    scale = 1.0 / samples / (lam if divide else 1.0)
    assert torch.equal(z.detach(), z_hand)
    torch.testing.assert_close(U.grad, grad_u * scale)
    torch.testing.assert_close(P.grad, grad_p * scale)

    # the check is not vacuous: the target moved the matching, and fresh noise in the target
    # solve (instead of the forward pass's) would give a different gradient
    assert grad_u.abs().sum() > 0
    other = perturbation_noise(
        (n, n), "gumbel", samples, generator=torch.Generator().manual_seed(8)
    )
    _, grad_u_other, _ = _imle_by_hand(U0, P0, W, lam, eps, other)
    assert not torch.allclose(U.grad, grad_u_other * scale)


def test_imle_without_pairwise_term_is_a_linear_assignment():
    U = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    z = imle_match(U, None, lam=10.0, noise="none")
    swap = torch.eye(3)[[1, 0, 2]]
    assert torch.equal(z, swap)
    hamming_loss(z).backward()  # the target (identity) wins after the step: grad = swap - eye
    torch.testing.assert_close(U.grad, swap - torch.eye(3))


def test_knn_adjacency_is_symmetric_without_self_loops():
    z = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    k = 3
    A = knn_adjacency(z, k)
    assert A.shape == (12, 12)
    assert torch.equal(A, A.T)
    assert torch.all(A.diagonal() == 0)
    assert set(A.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(A.sum(1) >= k)
    # each node's k most similar others are among its neighbours
    zn = torch.nn.functional.normalize(z, dim=1)
    sim = zn @ zn.T
    sim.fill_diagonal_(-2.0)
    top = sim.topk(k, dim=1).indices
    assert torch.all(A.gather(1, top) == 1)


def test_gcn_shapes_and_gradients():
    refiner = GraphRefiner(16, width=32, layers=2)
    z = torch.randn(8, 16, requires_grad=True)
    h = refiner(z, knn_adjacency(z, 3))
    assert h.shape == (8, 32)
    h.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert len(refiner.layers) == 2 and refiner.layers[-1].activation is None
    plain = GraphRefiner(16, width=32, layers=2, residual=False)
    assert plain.skip is None and plain(z, knn_adjacency(z, 3)).shape == (8, 32)


def test_hamming_loss_and_accuracy():
    n = 5
    eye = torch.eye(n)
    assert hamming_loss(eye).item() == 0.0
    swap = eye[[1, 0, 2, 3, 4]]
    assert hamming_loss(swap).item() == pytest.approx(4.0 / n)
    assert matching_accuracy(swap).item() == pytest.approx(3.0 / n)
    assert hamming_loss(swap, target=swap).item() == 0.0


def test_local_similarity_uses_the_correspondence():
    g = torch.Generator().manual_seed(0)
    F1 = torch.randn(3, 4, 5, 6, generator=g)
    aligned = local_similarity(F1, F1.clone())
    torch.testing.assert_close(aligned.diagonal(), torch.ones(3))
    # view 2 is view 1 flipped left-right: the flipped cell map recovers a perfect match
    F2 = F1.flip(-1)
    cols = torch.arange(6).flip(0)
    corr = (torch.arange(5)[:, None] * 6 + cols[None, :]).reshape(-1)
    flipped = local_similarity(F1, F2, corr)
    torch.testing.assert_close(flipped.diagonal(), torch.ones(3))
    assert local_similarity(F1, F2).diagonal().max() < 0.99


def test_edge_affinity_matrix_structure():
    g = torch.Generator().manual_seed(0)
    n = 5
    h1, h2 = torch.randn(n, 7, generator=g), torch.randn(n, 7, generator=g)
    a1, a2 = knn_adjacency(h1, 2), knn_adjacency(h2, 2)
    E = edge_affinity_matrix(h1, h2, a1, a2, sigma=0.5, kind="gaussian")
    assert E.shape == (n * n, n * n)
    torch.testing.assert_close(E, E.T)
    E4 = E.reshape(n, n, n, n)  # [i, a, j, b]
    mask = a1[:, None, :, None] * a2[None, :, None, :]
    assert torch.all(E4[mask == 0] == 0) and torch.all(E4[mask == 1] > 0)
    i, j = a1.nonzero()[0].tolist()
    a, b = a2.nonzero()[0].tolist()
    u1, u2 = torch.nn.functional.normalize(h1, dim=1), torch.nn.functional.normalize(h2, dim=1)
    expected = torch.exp(-((u1[i] - u1[j]) - (u2[a] - u2[b])).pow(2).sum() / 0.5)
    torch.testing.assert_close(E4[i, a, j, b], expected)
    K = qap_affinity_matrix(torch.eye(n), E)
    torch.testing.assert_close(K.diagonal(), torch.eye(n).reshape(-1))

    # LVM-Med's (the default): the cosine of the edge features
    C4 = edge_affinity_matrix(h1, h2, a1, a2).reshape(n, n, n, n)
    assert torch.all(C4[mask == 0] == 0)
    e1, e2 = u1[i] - u1[j], u2[a] - u2[b]
    torch.testing.assert_close(C4[i, a, j, b], e1 @ e2 / (e1.norm() * e2.norm()))


@pytest.mark.parametrize("maps", [None, (6, 6), (3, 4, 4)])
def test_graph_matching_loss_backpropagates_to_embeddings_and_maps(maps):
    torch.manual_seed(0)
    n, D = 8, 16
    module = GraphMatchingLoss(D, width=32, k=3)
    z1 = torch.randn(n, D, requires_grad=True)
    z2 = torch.randn(n, D, requires_grad=True)
    F1 = F2 = None
    if maps is not None:
        F1 = torch.randn(n, 4, *maps, requires_grad=True)
        F2 = torch.randn(n, 4, *maps, requires_grad=True)
    out = module(z1, z2, F1, F2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and 0.0 <= out["accuracy"].item() <= 1.0
    assert out["loss"].item() == pytest.approx(2.0 * (1.0 - out["accuracy"].item()))
    assert out["loss"].item() > 0  # random embeddings: the matching is not the identity
    out["loss"].backward()
    for t in (z1, z2) + ((F1, F2) if maps is not None else ()):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def _imle_grad(U0, P0, T, n, lam, *, scale=1.0, weight=1.0):
    """dL/dU of ``weight * hamming_sum(imle_match(U, P))`` backpropagated from ``scale * L``
    (as a grad scaler does) and divided by ``scale`` (its unscaling)."""
    U = U0.clone().requires_grad_(True)
    with loss_scale(scale):
        X = imle_match(
            U, P0, lam=lam, generator=torch.Generator().manual_seed(3), loss_weight=weight
        )
    loss = weight * (X * (1 - T) + (1 - X) * T).sum()
    (scale * loss).backward()
    return U.grad / scale


def test_imle_gradient_is_the_same_under_a_grad_scaler():
    """A grad scaler multiplies the incoming gradient by 2^16: I-MLE's target must not move
    2^16 times further, and its gradient must unscale to the unscaled one (it was divided
    by the scale: learning stopped under fp16)."""
    n, lam = 6, 80.0
    g = torch.Generator().manual_seed(1)
    U0 = torch.randn(n, n, generator=g, dtype=torch.float64)
    P0 = 0.1 * torch.rand(n * n, n * n, generator=g, dtype=torch.float64)
    P0 = 0.5 * (P0 + P0.T)
    T = torch.eye(n, dtype=torch.float64)
    plain = _imle_grad(U0, P0, T, n, lam)
    assert plain.abs().sum() > 0
    scaled = _imle_grad(U0, P0, T, n, lam, scale=2.0**16)
    torch.testing.assert_close(scaled, plain)

    # the same through torch's GradScaler and an optimiser step's unscale_
    U = torch.nn.Parameter(U0.clone())
    opt = torch.optim.SGD([U], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    with loss_scale(scaler.get_scale()):
        X = imle_match(U, P0, lam=lam, generator=torch.Generator().manual_seed(3))
    scaler.scale((X * (1 - T) + (1 - X) * T).sum()).backward()
    scaler.unscale_(opt)
    torch.testing.assert_close(U.grad, plain)


def test_imle_lambda_acts_on_the_summed_hamming_loss_whatever_the_loss_weight():
    """LVM-Med's λ is for the Hamming loss summed over nodes; the reported loss is divided by
    n. With loss_weight = 1/n the target is U - λ (1 - 2T) (λ, not λ/n) and the gradient is
    the weighted one."""
    n, lam = 6, 3.0
    g = torch.Generator().manual_seed(2)
    U0 = torch.randn(n, n, generator=g, dtype=torch.float64)
    T = torch.eye(n, dtype=torch.float64)
    eps = perturbation_noise((n, n), "gumbel", 1, generator=torch.Generator().manual_seed(3))[0]
    z = linear_assignment(U0 + eps)
    z_target = linear_assignment(U0 - lam * (1 - 2 * T) + eps)
    assert not torch.equal(z, z_target)  # the target moved the matching
    got = _imle_grad(U0, None, T, n, lam, weight=1.0 / n)
    torch.testing.assert_close(got, (z - z_target) / n)


def test_a_batch_is_matched_as_graphs_of_graph_size_nodes():
    assert [(g.start, g.stop) for g in graph_groups(32, 16)] == [(0, 16), (16, 32)]
    assert [(g.start, g.stop) for g in graph_groups(20, 16)] == [(0, 20)]
    assert [(g.start, g.stop) for g in graph_groups(8, 16)] == [(0, 8)]
    assert [(g.start, g.stop) for g in graph_groups(7, 3)] == [(0, 4), (4, 7)]
    torch.manual_seed(0)
    n, D = 12, 8
    module = GraphMatchingLoss(D, width=16, k=2, graph_size=4, noise="none")
    z1, z2 = torch.randn(n, D), torch.randn(n, D)
    out = module(z1, z2)
    assert out["matching"].shape == (n, n)
    off_block = torch.ones(n, n, dtype=torch.bool)
    for g in graph_groups(n, 4):
        off_block[g, g] = False
        alone = module(z1[g], z2[g])  # each graph is matched on its own
        assert torch.equal(out["matching"][g, g], alone["matching"])
    assert not out["matching"][off_block].any()
    expected = torch.stack([module(z1[g], z2[g])["loss"] for g in graph_groups(n, 4)]).mean()
    torch.testing.assert_close(out["loss"], expected)


def test_an_overflowed_incoming_gradient_gives_nan_not_a_solver_error():
    """fp16: once a grad scaler's scale overflows the matching's gradient, the step must be
    skippable (NaN gradients), not a solve at an infinite target."""
    n = 5
    U = torch.randn(n, n, dtype=torch.float64, requires_grad=True)
    P = torch.zeros(n * n, n * n, dtype=torch.float64, requires_grad=True)
    X = imle_match(U, P, generator=torch.Generator().manual_seed(0))
    (X * torch.full((n, n), float("inf"), dtype=torch.float64)).sum().backward()
    assert torch.isnan(U.grad).all() and torch.isnan(P.grad).all()
