"""Fixtures for the bilateral operator tests: small random problems with sigma maps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medssl.ops.bilateral import loader


def dense_bilateral(x, sigma_spatial, sigma_range, radius, eps=1e-3, guide=None):
    """Independent float64 oracle: an explicit loop over every voxel and window tap.

    x: (B, C, *S) numpy; sigmas: numpy arrays broadcastable to (B, 1, *S); guide: optional
    (B, Cg, *S) numpy whose values give the range distance instead of x's (joint filter).
    Border rule written out here: reflect about the edge voxel, then clamp.
    """
    B, C, *S = x.shape
    nd = len(S)

    def border(q, n):
        if n == 1:
            return 0
        if q < 0:
            q = -q
        if q > n - 1:
            q = 2 * (n - 1) - q
        return min(max(q, 0), n - 1)

    g = x if guide is None else guide
    sig = [np.broadcast_to(s, (B, 1, *S)) for s in sigma_spatial]
    sr = np.broadcast_to(sigma_range, (B, 1, *S))
    out = np.zeros_like(x, dtype=np.float64)
    for b in range(B):
        for i in itertools.product(*(range(n) for n in S)):
            num = np.zeros(C)
            den = 0.0
            for d in itertools.product(*(range(-r, r + 1) for r in radius)):
                j = tuple(border(i[a] + d[a], S[a]) for a in range(nd))
                logw = 0.0
                for a in range(nd):
                    s = max(float(sig[a][(b, 0, *i)]), eps)
                    logw -= d[a] ** 2 / (2 * s * s)
                r = max(float(sr[(b, 0, *i)]), eps)
                diff = g[(b, slice(None), *i)] - g[(b, slice(None), *j)]
                logw -= float(np.sum(diff**2)) / (2 * r * r)
                w = np.exp(logw)
                num += w * x[(b, slice(None), *j)]
                den += w
            out[(b, slice(None), *i)] = num / den
    return out


def random_problem(shape, *, dtype=torch.float64, seed=0, per_voxel=True, requires_grad=False):
    """x and sigma maps (spatial in voxels 0.3..2.8, range 0.3..1.5) for a shape (B, C, *S)."""
    gen = torch.Generator().manual_seed(seed)
    B, _, *S = shape
    x = torch.randn(shape, generator=gen, dtype=dtype)
    mshape = (B, 1, *S) if per_voxel else (B, 1, *([1] * len(S)))
    sig = [torch.rand(mshape, generator=gen, dtype=dtype) * 2.5 + 0.3 for _ in S]
    sr = torch.rand(mshape, generator=gen, dtype=dtype) * 1.2 + 0.3
    if requires_grad:
        for t in (x, *sig, sr):
            t.requires_grad_()
    return x, sig, sr


@pytest.fixture
def have_cpu_kernel():
    if not loader.status().cpu:
        pytest.fail(f"the compiled CPU kernel is not loaded: {loader.status().cpu_problem}")
