"""The CUDA kernel: compiled with nvcc on any machine (``nvcc`` marker), run against the
reference where a GPU is present (``cuda`` marker)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from medssl.ops.bilateral import bilateral_filter, bilateral_filter_reference, loader, set_backend
from medssl.ops.bilateral.toolchain import find_cuda_home
from tests.ops.conftest import random_problem


@pytest.mark.nvcc
@pytest.mark.e2e
def test_nvcc_compiles_and_registers_the_cuda_kernel(tmp_path):
    """Compile the CUDA sources (one architecture, to keep CI short) and load the library in a
    fresh process: it registers CUDA kernels for both ops, with or without a GPU."""
    if find_cuda_home() is None:
        pytest.skip("no CUDA toolkit (nvcc) on this machine")
    lib = loader.build_cuda(tmp_path / "build", arch_list="8.0")
    script = textwrap.dedent(
        f"""
        import torch, medssl.ops
        from medssl.ops.bilateral import loader
        loader.load_cuda_library({str(lib)!r})
        for op in ("medssl::bilateral_filter", "medssl::bilateral_filter_backward"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
        print("registered")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "registered" in proc.stdout


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def cuda_backend():
    if not loader.status().cuda:
        pytest.fail(f"CUDA kernel not loaded: {loader.status().cuda_problem}")
    set_backend("cuda")
    yield
    set_backend(None)


@pytest.mark.cuda
@requires_gpu
@pytest.mark.parametrize(
    ("shape", "radius"),
    [
        ((2, 1, 37, 45), (3, 4)),
        ((1, 3, 20, 17), (2, 2)),
        ((1, 1, 9, 21, 18), (2, 3, 3)),
        ((1, 2, 3, 4, 5), (4, 3, 2)),
        ((1, 1, 64, 64), (12, 12)),
    ],
)
def test_cuda_matches_reference_forward_and_backward(cuda_backend, shape, radius):
    x, sig, sr = random_problem(shape, dtype=torch.float64, seed=1)
    x, sr = x.cuda().requires_grad_(), sr.cuda().requires_grad_()
    sig = [s.cuda().requires_grad_() for s in sig]
    out = bilateral_filter(x, sig, sr, radius)
    ref, _ = bilateral_filter_reference(x, sig, sr, radius)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, *sig, sr], g)
    want = torch.autograd.grad(ref, [x, *sig, sr], g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


@pytest.mark.cuda
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_low_precision_inputs(cuda_backend, dtype):
    x, sig, sr = random_problem((2, 1, 64, 48), dtype=torch.float32, seed=2)
    x, sig, sr = x.cuda(), [s.cuda() for s in sig], sr.cuda()
    out = bilateral_filter(x.to(dtype), sig, sr, 3)
    ref, _ = bilateral_filter_reference(x.to(dtype).float(), sig, sr, [3, 3])
    assert out.dtype == dtype
    tol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


@pytest.mark.cuda
@requires_gpu
def test_cuda_backward_is_deterministic(cuda_backend):
    x, sig, sr = random_problem((2, 1, 96, 80), dtype=torch.float32, seed=3, requires_grad=False)
    x = x.cuda().requires_grad_()
    sig = [s.cuda().requires_grad_() for s in sig]
    sr = sr.cuda().requires_grad_()
    runs = []
    for _ in range(2):
        out = bilateral_filter(x, sig, sr, 4)
        runs.append(torch.autograd.grad(out.square().sum(), [x, *sig, sr]))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.cuda
@requires_gpu
def test_cuda_compile_fullgraph(cuda_backend):
    x, sig, sr = random_problem((1, 1, 32, 32), dtype=torch.float32, seed=4)
    x, sig, sr = x.cuda(), [s.cuda() for s in sig], sr.cuda()
    f = torch.compile(lambda x: bilateral_filter(x, sig, sr, 2), fullgraph=True)
    torch.testing.assert_close(f(x), bilateral_filter(x, sig, sr, 2))
