"""A deterministic heuristic for Lawler's quadratic assignment problem (QAP).

Graph matching in LVM-Med (Nguyen et al., NeurIPS 2023) is Lawler's QAP: given an affinity
matrix ``K`` of shape ``(n², n²)`` whose entry ``K[i*n + a, j*n + b]`` scores matching node
``i`` of G1 to node ``a`` of G2 together with ``j`` to ``b`` (vertex affinities on the
diagonal), find the permutation matrix ``X`` (``X[i, a] = 1`` when ``i`` goes to ``a``) that
maximises ``vec(X)ᵀ K vec(X)`` with ``vec(X)[i*n + a] = X[i, a]`` (row-major flattening).

:func:`solve_qap` is our own heuristic (no exactness guarantee; QAP is NP-hard):

1. ``K`` is replaced by its symmetric part ``M = (K + Kᵀ)/2`` (same objective).
2. Several deterministic starting points:
   a. spectral matching (Leordeanu & Hebert, ICCV 2005): the leading eigenvector of the
      non-negative part of ``M`` by power iteration, made doubly stochastic by Sinkhorn;
   b. the uniform doubly stochastic matrix ``1/n``;
   c. the first-order solution: the Hungarian assignment on the vertex (diagonal) affinities;
   d. ``restarts`` random doubly stochastic matrices from a fixed-seed NumPy generator (so the
      solver stays deterministic).
3. From each start, IPFP (integer projected fixed point, Leordeanu, Hebert & Sukthankar,
   NeurIPS 2009): project the gradient ``M x`` to the best permutation with the Hungarian
   algorithm (:func:`scipy.optimize.linear_sum_assignment`), take the exact line search step
   towards it on the quadratic, keep the best discrete point seen.
4. Each IPFP result is improved by a steepest-ascent local search: 2-opt (swap the targets of
   two nodes) and, when no swap improves, the best improving 3-cycle (rotate the targets of
   three nodes), until neither improves. The best over all starts is returned (ties go to the
   earlier start).

Everything runs on the CPU in float64; for ``n = 16`` one call takes a few milliseconds.
"""

from __future__ import annotations

import functools
import itertools
from typing import overload

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["brute_force_qap", "linear_assignment", "qap_objective", "solve_qap"]

ArrayLike = torch.Tensor | np.ndarray


def _to_numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def _check_k(K: np.ndarray, n: int | None) -> tuple[np.ndarray, int]:
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (n², n²) matrix, got {K.shape}")
    nn_ = K.shape[0]
    if n is None:
        n = round(nn_**0.5)
    if n * n != nn_:
        raise ValueError(f"K of shape {K.shape} does not fit n = {n} (needs n² = {nn_})")
    return K, int(n)


def _perm_to_matrix(perm: np.ndarray, like: ArrayLike) -> ArrayLike:
    n = perm.shape[0]
    X = np.zeros((n, n), dtype=np.float64)
    X[np.arange(n), perm] = 1.0
    if isinstance(like, torch.Tensor):
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return torch.from_numpy(X).to(device=like.device, dtype=dtype)
    return X


def _assign(scores: np.ndarray) -> np.ndarray:
    """Permutation ``perm`` (``perm[i]`` = column of row ``i``) maximising the sum of scores."""
    rows, cols = linear_sum_assignment(scores, maximize=True)
    perm = np.empty(scores.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm


def linear_assignment(scores: ArrayLike) -> ArrayLike:
    """First-order matching: the permutation matrix maximising ``Σ_ia X[i, a] scores[i, a]``.

    Args:
        scores: ``(n, n)`` tensor or array.

    Returns:
        ``(n, n)`` permutation matrix of the same kind (tensor on the same device, or array).
    """
    return _perm_to_matrix(_assign(_to_numpy(scores)), scores)


def qap_objective(K: ArrayLike, X: ArrayLike) -> float:
    """``vec(X)ᵀ K vec(X)`` with row-major ``vec``.

    Args:
        K: ``(n², n²)`` affinity matrix.
        X: ``(n, n)`` matching (any real matrix).
    """
    x = _to_numpy(X).reshape(-1)
    return float(x @ _to_numpy(K) @ x)


def _perm_value(M: np.ndarray, perm: np.ndarray) -> float:
    n = perm.shape[0]
    idx = np.arange(n) * n + perm
    return float(M[np.ix_(idx, idx)].sum())


def _sinkhorn(P: np.ndarray, iters: int = 30) -> np.ndarray:
    P = np.maximum(P, 1e-12)
    for _ in range(iters):
        P = P / P.sum(axis=1, keepdims=True)
        P = P / P.sum(axis=0, keepdims=True)
    return P


def _spectral_start(M: np.ndarray, n: int, iters: int = 50) -> np.ndarray:
    """Leading eigenvector of ``max(M, 0)`` (Perron vector) reshaped and Sinkhorn-normalised."""
    P = np.maximum(M, 0.0)
    # a diagonal shift keeps power iteration from oscillating on bipartite structure
    P = P + np.eye(P.shape[0]) * max(float(np.abs(P).max()), 1e-12)
    v = np.full(P.shape[0], 1.0 / P.shape[0])
    for _ in range(iters):
        w = P @ v
        norm = np.linalg.norm(w)
        if norm == 0.0:
            break
        v = w / norm
    return _sinkhorn(v.reshape(n, n) + 1e-9).reshape(-1)


def _ipfp(M: np.ndarray, x: np.ndarray, n: int, max_iter: int) -> np.ndarray:
    """IPFP from the (flattened, relaxed) start ``x``; returns the best permutation seen.

    Each step projects the gradient direction ``M x`` onto the permutations (Hungarian), then
    moves along ``d = b - x`` to the maximum of the quadratic on the segment ``[x, b]``:
    ``C = xᵀM d`` (>= 0 since ``b`` maximises the linear model), ``D = dᵀM d``; the step is 1
    when ``D >= 0``, else ``min(-C/D, 1)``. ``M x`` is updated linearly, so each step costs one
    gather of ``n`` columns of ``M`` and one ``n × n`` assignment.
    """
    ar = np.arange(n)
    g = M @ x
    best_perm: np.ndarray | None = None
    best_val = 0.0
    prev: np.ndarray | None = None
    for _ in range(max_iter):
        perm = _assign(g.reshape(n, n))
        idx = ar * n + perm
        b = np.zeros(n * n)
        b[idx] = 1.0
        gb = M[:, idx].sum(axis=1)  # M b
        bMb = float(gb[idx].sum())
        if best_perm is None or bMb > best_val + 1e-12 * max(1.0, abs(best_val)):
            best_val, best_perm = bMb, perm
        xMb = float(g[idx].sum())
        xMx = float(g @ x)
        C = xMb - xMx
        D = bMb - 2.0 * xMb + xMx
        r = 1.0 if D >= 0.0 else min(max(-C / D, 0.0), 1.0)
        if r >= 1.0:
            if prev is not None and np.array_equal(prev, perm):
                break  # x is already this permutation: a fixed point
            x, g = b, gb
        else:
            if r <= 1e-12:
                break
            x = x + r * (b - x)
            g = g + r * (gb - g)
        prev = perm if r >= 1.0 else None
    assert best_perm is not None
    return best_perm


def _move_deltas(M: np.ndarray, g: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Objective change of moves that replace the indices ``old`` by ``new``.

    With the current index set ``I`` and ``g[u] = Σ_{s∈I} M[u, s]``, a move swaps the rows of
    ``old`` (``(C, m)``, a subset of ``I``) for ``new`` (``(C, m)``); on a symmetric ``M`` its
    gain is ``2 Σ_{u∈new} (g[u] - Σ_{o∈old} M[u, o]) - 2 Σ_{u∈old} (g[u] - Σ_{o∈old} M[u, o])
    + Σ_{u,v∈new} M[u, v] - Σ_{u,v∈old} M[u, v]``. Returns ``(C,)``.
    """
    new_old = M[new[:, :, None], old[:, None, :]].sum(axis=2)  # (C, m)
    old_old = M[old[:, :, None], old[:, None, :]]  # (C, m, m)
    new_new = M[new[:, :, None], new[:, None, :]]
    rest_new = (g[new] - new_old).sum(axis=1)
    rest_old = (g[old] - old_old.sum(axis=2)).sum(axis=1)
    return 2.0 * (rest_new - rest_old) + new_new.sum(axis=(1, 2)) - old_old.sum(axis=(1, 2))


@functools.lru_cache(maxsize=16)
def _cyclic_moves(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of every ``m``-subset and their non-trivial cyclic shifts: ``perm[rows] <- perm[src]``.

    ``m = 2`` gives the pairwise swaps (2-opt), ``m = 3`` the two rotations of each triple.
    """
    sets = np.array(list(itertools.combinations(range(n), m)), dtype=np.int64).reshape(-1, m)
    rows = np.concatenate([sets] * (m - 1))
    src = np.concatenate([np.roll(sets, -s, axis=1) for s in range(1, m)])
    return rows, src


def _local_search(M: np.ndarray, perm: np.ndarray, max_iter: int = 1000) -> np.ndarray:
    """Steepest ascent over pairwise swaps (2-opt); when none improves, over 3-cycles.

    Stops when no swap and no 3-cycle improves the (symmetric) objective.
    """
    n = perm.shape[0]
    perm = perm.copy()
    ar = np.arange(n)
    moves = [_cyclic_moves(n, m) for m in (2, 3) if m <= n]
    for _ in range(max_iter):
        cur = ar * n + perm
        g = M[:, cur].sum(axis=1)  # (n²,)
        tol = 1e-10 * max(1.0, float(np.abs(g).max()))
        for rows, src in moves:
            old = cur[rows]
            new = rows * n + perm[src]
            delta = _move_deltas(M, g, old, new)
            best = int(np.argmax(delta))
            if delta[best] > tol:
                perm[rows[best]] = perm[src[best]]
                break
        else:
            break
    return perm


@overload
def solve_qap(
    K: torch.Tensor, n: int | None = ..., *, restarts: int = ..., max_iter: int = ...
) -> torch.Tensor: ...
@overload
def solve_qap(
    K: np.ndarray, n: int | None = ..., *, restarts: int = ..., max_iter: int = ...
) -> np.ndarray: ...
def solve_qap(
    K: ArrayLike, n: int | None = None, *, restarts: int = 4, max_iter: int = 50
) -> ArrayLike:
    """Permutation matrix ``X`` (approximately) maximising ``vec(X)ᵀ K vec(X)``.

    Spectral / uniform / first-order / seeded random starts, IPFP with Hungarian projection,
    then 2-opt + 3-cycle local search (see the module docstring). Deterministic.

    Args:
        K: ``(n², n²)`` affinity matrix, tensor (any device; solved on the CPU) or array.
            Index ``(i, a)`` is ``i * n + a``. Need not be symmetric or non-negative.
        n: Number of nodes per graph; inferred from ``K`` when ``None``.
        restarts: Number of extra seeded random starts.
        max_iter: IPFP iterations per start.

    Returns:
        ``(n, n)`` 0/1 permutation matrix, ``X[i, a] = 1`` when node ``i`` of G1 matches node
        ``a`` of G2: a tensor on ``K``'s device and floating dtype if ``K`` is a tensor, else a
        float64 array.
    """
    M, n = _check_k(_to_numpy(K), n)
    M = 0.5 * (M + M.T)
    if n == 1:
        return _perm_to_matrix(np.zeros(1, dtype=np.int64), K)
    rng = np.random.default_rng(0)
    starts = [
        _spectral_start(M, n),
        np.full(n * n, 1.0 / n),
    ]
    first_order = np.zeros(n * n)
    first_order[np.arange(n) * n + _assign(np.diag(M).reshape(n, n))] = 1.0
    starts.append(first_order)
    for _ in range(restarts):
        starts.append(_sinkhorn(np.exp(rng.standard_normal((n, n)))).reshape(-1))

    best_perm, best_val = None, 0.0
    for x0 in starts:
        perm = _local_search(M, _ipfp(M, x0, n, max_iter))
        val = _perm_value(M, perm)
        if best_perm is None or val > best_val + 1e-12 * max(1.0, abs(best_val)):
            best_perm, best_val = perm, val
    assert best_perm is not None
    return _perm_to_matrix(best_perm, K)


def brute_force_qap(K: ArrayLike, n: int | None = None) -> tuple[np.ndarray, float]:
    """Exact QAP by enumerating all ``n!`` permutations (for tests; ``n <= 7``).

    Args:
        K: ``(n², n²)`` affinity matrix.
        n: Nodes per graph; inferred when ``None``.

    Returns:
        ``(X, value)``: the ``(n, n)`` float64 optimal permutation matrix (ties go to the
        lexicographically first permutation) and its objective.
    """
    M, n = _check_k(_to_numpy(K), n)
    if n > 7:
        raise ValueError(f"brute_force_qap enumerates n! permutations; n = {n} is too large")
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)  # (n!, n)
    idx = np.arange(n)[None, :] * n + perms  # (n!, n)
    values = M[idx[:, :, None], idx[:, None, :]].sum(axis=(1, 2))
    best = int(np.argmax(values))
    X = np.zeros((n, n))
    X[np.arange(n), perms[best]] = 1.0
    return X, float(values[best])
