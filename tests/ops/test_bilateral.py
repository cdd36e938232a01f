"""The bilateral filter operator: every backend against an independent dense formula, exact
gradients (gradcheck), opcheck, determinism, torch.compile, borders and argument checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from medssl.ops.bilateral import (
    BilateralFilter,
    bilateral_filter,
    dispatch_table,
    joint_bilateral_filter,
    radius_for_sigma,
    set_backend,
)
from tests.ops.conftest import dense_bilateral, random_problem

CPU_BACKENDS = ["reference", "cpu"]


@pytest.fixture
def use_backend(request):
    """Select a backend for one test and restore the environment's afterwards."""

    def select(name):
        set_backend(name)

    yield select
    set_backend(None)


CASES = [
    # (shape, radius, per-voxel sigma maps)
    ((2, 1, 7, 6), (2, 3), True),
    ((1, 3, 5, 9), (2, 2), True),  # several channels share the weights
    ((2, 1, 6, 6), (1, 2), False),  # one sigma per image, broadcast
    ((1, 1, 3, 2), (4, 3), True),  # radius larger than the axes
    ((1, 1, 4, 5, 6), (1, 2, 2), True),
    ((1, 2, 3, 4, 3), (2, 1, 3), True),
    ((1, 1, 1, 6, 5), (2, 1, 2), True),  # a size-1 axis
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(("shape", "radius", "per_voxel"), CASES)
def test_matches_dense_formula(use_backend, have_cpu_kernel, backend, shape, radius, per_voxel):
    use_backend(backend)
    x, sig, sr = random_problem(shape, per_voxel=per_voxel, seed=len(shape) + sum(radius))
    got = bilateral_filter(x, sig, sr, radius)
    want = dense_bilateral(x.numpy(), [s.numpy() for s in sig], sr.numpy(), radius)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_float32_and_float_sigmas(use_backend, have_cpu_kernel, backend):
    use_backend(backend)
    x, _, _ = random_problem((2, 1, 9, 11), dtype=torch.float32, seed=3)
    got = bilateral_filter(x, (1.3, 0.7), 0.8, (2, 3))
    want = dense_bilateral(
        x.double().numpy(), [np.array(1.3), np.array(0.7)], np.array(0.8), (2, 3)
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=2e-6)
    assert got.dtype == torch.float32


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_size_one_axis_behaves_as_2d(use_backend, have_cpu_kernel, backend):
    use_backend(backend)
    x, sig, sr = random_problem((2, 1, 8, 7), seed=5)
    two_d = bilateral_filter(x, sig, sr, (2, 2))
    three_d = bilateral_filter(
        x[:, :, None],
        [torch.full_like(sig[0], 1.7)[:, :, None], *(s[:, :, None] for s in sig)],
        sr[:, :, None],
        (3, 2, 2),
    )
    torch.testing.assert_close(three_d[:, :, 0], two_d, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_zero_sigma_means_no_smoothing_with_finite_gradients(use_backend, have_cpu_kernel, backend):
    use_backend(backend)
    x, sig, sr = random_problem((1, 1, 6, 7), seed=7, requires_grad=True)
    out = bilateral_filter(x, sig, torch.zeros_like(sr, requires_grad=True), 2)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)  # range sigma 0: identity
    zero_x = torch.zeros_like(sig[1], requires_grad=True)
    out = bilateral_filter(x, (sig[0], zero_x), sr, (2, 2))
    along_y_only = bilateral_filter(x, (sig[0], 1.0), sr, (2, 0))
    torch.testing.assert_close(out, along_y_only, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    for t in (x, sig[0], zero_x, sr):
        if t.grad is not None:
            assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    ("shape", "radius"), [((2, 1, 5, 6), (2, 1)), ((1, 2, 3, 4, 3), (1, 2, 2))]
)
def test_gradcheck(use_backend, have_cpu_kernel, backend, shape, radius):
    """Exact gradients for the input and every sigma map (float64)."""
    use_backend(backend)
    x, sig, sr = random_problem(shape, seed=11, requires_grad=True)

    def f(x, sr, *sig):
        return bilateral_filter(x, sig, sr, radius)

    assert torch.autograd.gradcheck(f, (x, sr, *sig), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_cpu_kernel_backward_matches_reference_autograd(use_backend, have_cpu_kernel):
    x, sig, sr = random_problem((2, 2, 9, 8), seed=13, requires_grad=True)
    g = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    grads = {}
    for backend in CPU_BACKENDS:
        use_backend(backend)
        out = bilateral_filter(x, sig, sr, (3, 2))
        grads[backend] = torch.autograd.grad(out, [x, *sig, sr], g)
    for a, b in zip(grads["cpu"], grads["reference"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_backward_is_deterministic_bitwise(use_backend, have_cpu_kernel):
    use_backend("cpu")
    x, sig, sr = random_problem((2, 1, 33, 40), dtype=torch.float32, seed=17, requires_grad=True)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, threads, 1):
            torch.set_num_threads(n)
            out = bilateral_filter(x, sig, sr, (3, 3))
            runs.append([out, *torch.autograd.grad(out.square().sum(), [x, *sig, sr])])
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            assert torch.equal(a, b)


def test_opcheck(have_cpu_kernel):
    x, sig, sr = random_problem((2, 1, 5, 6), dtype=torch.float32, seed=19, requires_grad=True)
    sig = [s.detach().requires_grad_() for s in sig]
    torch.library.opcheck(torch.ops.medssl.bilateral_filter.default, (x, sig, sr, [2, 1]))
    out, norm = torch.ops.medssl.bilateral_filter(x, sig, sr, [2, 1])
    g = torch.randn_like(out)
    torch.library.opcheck(
        torch.ops.medssl.bilateral_filter_backward.default,
        (
            g,
            x.detach(),
            out.detach(),
            norm,
            [s.detach() for s in sig],
            sr.detach(),
            [2, 1],
            [True, True, False, True],
        ),
    )


def test_torch_compile_fullgraph_training_step(use_backend, have_cpu_kernel):
    """A training step whose sigma maps come from a network, compiled without graph breaks."""
    use_backend("cpu")
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 3, 3, padding=1).double()
    x = torch.randn(2, 1, 12, 10, dtype=torch.float64)

    def step(x):
        s = torch.nn.functional.softplus(net(x)) + 0.1
        out = bilateral_filter(x, (s[:, :1], s[:, 1:2]), s[:, 2:], (2, 2))
        return (out - x).abs().mean()

    loss = step(x)
    eager = torch.autograd.grad(loss, list(net.parameters()))
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss_c = compiled(x)
    comp = torch.autograd.grad(loss_c, list(net.parameters()))
    torch.testing.assert_close(loss_c, loss)
    for a, b in zip(comp, eager, strict=True):
        torch.testing.assert_close(a, b)


def test_module_and_function_agree(have_cpu_kernel):
    x, sig, sr = random_problem((1, 1, 8, 8), dtype=torch.float32, seed=23)
    f = BilateralFilter(radius=2, sigma_spatial=(1.0, 1.5), sigma_range=0.5)
    torch.testing.assert_close(f(x), bilateral_filter(x, (1.0, 1.5), 0.5, 2))
    torch.testing.assert_close(f(x, sig, sr), bilateral_filter(x, sig, sr, 2))


def test_argument_checks():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        bilateral_filter(torch.rand(8, 8), (1.0, 1.0), 0.1, 2)
    with pytest.raises(ValueError, match="2 entries"):
        bilateral_filter(x, (1.0,), 0.1, 2)
    with pytest.raises(ValueError, match="broadcastable"):
        bilateral_filter(x, (torch.rand(1, 1, 4, 4), 1.0), 0.1, 2)
    with pytest.raises(ValueError, match="radius"):
        bilateral_filter(x, (1.0, 1.0), 0.1, (2, -1))
    with pytest.raises(ValueError, match=">= 0"):
        bilateral_filter(x, (1.0, 1.0), -0.1, 2)
    with pytest.raises(TypeError, match="floating-point"):
        bilateral_filter(x.long(), (1.0, 1.0), 0.1, 2)


def test_radius_rule():
    assert radius_for_sigma(3.0) == 6
    assert radius_for_sigma(2.5) == 5
    assert radius_for_sigma(0.0) == 0


def test_backend_switch(use_backend, have_cpu_kernel):
    use_backend("reference")
    assert dispatch_table()["cpu"] == "reference"
    use_backend("cpu")
    assert dispatch_table()["cpu"] == "op"
    use_backend("cuda")
    with pytest.raises(RuntimeError, match="backend 'cuda' on a CPU tensor"):
        bilateral_filter(torch.rand(1, 1, 4, 4), (1.0, 1.0), 0.1, 1)
    with pytest.raises(ValueError, match="MEDSSL_BILATERAL_BACKEND"):
        set_backend("fast")


def test_without_compiled_kernels_the_op_still_exists(tmp_path):
    """MEDSSL_KERNEL_DISABLE=1: schemas defined from Python, the reference implements them,
    fake and autograd work, and medssl says once that it uses the reference."""
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import torch
            import medssl.ops as ops
        from medssl.ops.bilateral import loader, dispatch_table
        assert not loader.status().cpu
        assert dispatch_table()["cpu"] == "reference"
        print("warnings", sum("reference" in str(w.message) for w in caught))
        x = torch.randn(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
        s = torch.full((1, 1, 6, 7), 1.2, dtype=torch.float64, requires_grad=True)
        sr = torch.full((1, 1, 6, 7), 0.7, dtype=torch.float64)
        out, norm = torch.ops.medssl.bilateral_filter(x, [s, s], sr, [2, 2])
        ref, _ = ops.bilateral.bilateral_filter_reference(x, [s, s], sr, [2, 2])
        assert torch.allclose(out, ref)
        g = torch.autograd.grad(out.sum(), [x, s])
        gr = torch.autograd.grad(ref.sum(), [x, s])
        assert all(torch.allclose(a, b) for a, b in zip(g, gr))
        f = torch.compile(lambda x: torch.ops.medssl.bilateral_filter(x, [s, s], sr, [2, 2])[0],
                          fullgraph=True, backend="aot_eager")
        assert torch.allclose(f(x), out)
        from medssl.denoise.filter2noise.nlm import kernel_available, nonlocal_means
        assert not kernel_available()  # the NLM stage runs its torch loops
        y = nonlocal_means(x, (s, s), sr, 2)
        assert y.shape == x.shape and torch.autograd.grad(y.sum(), x)[0].isfinite().all()
        print("ok")
        """
    )
    env = {**os.environ, "MEDSSL_KERNEL_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warnings 1" in proc.stdout and "ok" in proc.stdout


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_two_channels_float32_match_float64(use_backend, have_cpu_kernel, backend):
    """The CPU kernel's two-channel path (an image and its guide) against float64, forward and
    backward."""
    use_backend(backend)
    x64, sig64, sr64 = random_problem((2, 2, 11, 37), seed=23)
    g = torch.randn(2, 2, 11, 37, dtype=torch.float64)
    grads = []
    for dtype in (torch.float64, torch.float32):
        x = x64.to(dtype).requires_grad_()
        sig = [s.to(dtype).requires_grad_() for s in sig64]
        sr = sr64.to(dtype).requires_grad_()
        out = bilateral_filter(x, sig, sr, (3, 2))
        grads.append([out, *torch.autograd.grad(out, [x, *sig, sr], g.to(dtype))])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b.double(), a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_joint_filter_matches_dense_formula(use_backend, have_cpu_kernel, backend):
    """Range weights from the guide, values from x; exact gradients to x, guide and sigmas."""
    use_backend(backend)
    x, sig, sr = random_problem((2, 1, 7, 6), seed=29)
    guide = torch.randn(2, 1, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = joint_bilateral_filter(x, guide, sig, sr, (2, 3))
    want = dense_bilateral(
        x.numpy(), [s.numpy() for s in sig], sr.numpy(), (2, 3), guide=guide.numpy()
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-7, atol=1e-7)
    # a guide equal to x is the plain filter (up to the 2^-28 share of x's own distance)
    torch.testing.assert_close(
        joint_bilateral_filter(x, x, sig, sr, (2, 3)),
        bilateral_filter(x, sig, sr, (2, 3)),
        rtol=1e-7,
        atol=1e-7,
    )
    xs, gs, srs = (
        t.clone().requires_grad_()
        for t in (x[:1, :, :5, :4], guide[:1, :, :5, :4], sr[:1, :, :5, :4])
    )
    sigs = [s[:1, :, :5, :4].clone().requires_grad_() for s in sig]

    def f(x, guide, sr, *sig):
        return joint_bilateral_filter(x, guide, sig, sr, (1, 2))

    assert torch.autograd.gradcheck(f, (xs, gs, srs, *sigs), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_joint_filter_checks_the_guide():
    x = torch.zeros(1, 1, 4, 5)
    with pytest.raises(ValueError, match="guide must be"):
        joint_bilateral_filter(x, torch.zeros(1, 1, 4, 4), (1.0, 1.0), 0.1, 1)
