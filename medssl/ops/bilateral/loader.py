"""Loading (and, for CUDA, building) the compiled kernels of ``medssl::bilateral_filter``.

* The C++ CPU kernel is the extension module ``medssl.ops.bilateral._C``, compiled when the
  package is installed. Where it cannot be imported, ``MEDSSL_KERNEL_JIT=1`` compiles it just in
  time into the kernel cache (a developer fallback; needs a C++ compiler).
* The CUDA kernel is ``medssl.ops.bilateral._C_cuda`` when the package was installed with
  ``MEDSSL_BUILD_CUDA=1`` (the CUDA image), or a library in the kernel cache built by
  ``medssl ops build``. It is loaded only where a GPU is present.
* ``MEDSSL_KERNEL_DISABLE=1`` loads no compiled kernel (the reference serves every device).
* The kernel cache is ``$MEDSSL_KERNEL_CACHE`` (default ``~/.cache/medssl/kernels``), one
  folder per torch/CUDA version and source hash, so a stale build is never loaded.

Loading never happens inside the op call: it runs once, when :mod:`medssl.ops` is imported.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medssl.ops.bilateral.toolchain import DEFAULT_ARCH_LIST, cuda_library_dir, find_cuda_home

__all__ = [
    "KernelBuildError",
    "KernelStatus",
    "build_cpu_jit",
    "build_cuda",
    "kernel_cache_dir",
    "load_cpu_kernel",
    "load_cuda_kernel",
    "load_cuda_library",
    "status",
]

log = logging.getLogger(__name__)
CSRC = Path(__file__).with_name("csrc")
CPU_SOURCES = ("bilateral_cpu.cpp", "nlm_cpu.cpp")
CUDA_SOURCES = ("bilateral_cuda.cpp", "bilateral_cuda_kernel.cu")
HEADERS = ("bilateral_common.h", "bilateral_host.h", "bilateral_cuda.h", "cpu_exp.h")


class KernelBuildError(RuntimeError):
    """A kernel could not be compiled (the message holds the compiler's last lines)."""


@dataclass
class KernelStatus:
    """What is loaded. ``cpu``/``cuda``: a compiled kernel is registered for that device;
    ``*_source``: where it came from; ``*_problem``: why not (or why it is not used)."""

    cpu: bool = False
    cpu_source: str | None = None
    cpu_problem: str | None = None
    cuda: bool = False
    cuda_source: str | None = None
    cuda_problem: str | None = None
    cuda_validated: bool = False
    notes: list[str] = field(default_factory=list)


_STATUS = KernelStatus()


def status() -> KernelStatus:
    """The kernel status (after :func:`load_kernels`)."""
    return _STATUS


def _source_hash(names: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in (*names, *HEADERS):
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    return h.hexdigest()[:12]


def kernel_cache_dir(kind: str) -> Path:
    """Cache folder of a kernel build: ``<cache>/<kind>-torch<ver>-cu<ver>-<source hash>``."""
    root = Path(
        os.environ.get("MEDSSL_KERNEL_CACHE", Path.home() / ".cache" / "medssl" / "kernels")
    )
    names = CPU_SOURCES if kind == "cpu" else CUDA_SOURCES
    tag = f"{kind}-torch{torch.__version__}-cu{torch.version.cuda}-{_source_hash(names)}"
    return root.expanduser() / tag.replace("+", "_")


def _run_build(kind: str, out_dir: Path, env: dict[str, str], verbose: bool) -> Path:
    """Compile in a subprocess (so that CUDA_HOME and the arch list are read fresh)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [str(CSRC / s) for s in (CPU_SOURCES if kind == "cpu" else CUDA_SOURCES)]
    name = "medssl_bilateral_cpu" if kind == "cpu" else "medssl_bilateral_cuda"
    script = (
        "import sys, torch.utils.cpp_extension as ce\n"
        f"flags = {['-O3', '-std=c++20', '-fopenmp', '-fno-math-errno', '-fno-trapping-math']!r}\n"
        "kw = {}\n"
        f"if {kind == 'cuda'!r}:\n"
        "    from medssl.ops.bilateral.toolchain import cuda_build_flags, cuda_library_dir\n"
        "    kw['extra_cuda_cflags'] = cuda_build_flags()\n"
        "    kw['extra_ldflags'] = ['-L' + str(cuda_library_dir(ce.CUDA_HOME))]\n"
        "    flags = ['-O3', '-std=c++20']\n"
        f"ce.load(name={name!r}, sources={sources!r}, extra_cflags=flags,\n"
        f"        extra_ldflags=kw.pop('extra_ldflags', ['-fopenmp']),\n"
        f"        build_directory={str(out_dir)!r}, is_python_module=False,\n"
        f"        with_cuda={kind == 'cuda'!r}, verbose={verbose!r}, **kw)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=not verbose,
        text=True,
        check=False,
    )
    lib = out_dir / f"{name}.so"
    if proc.returncode != 0 or not lib.is_file():
        tail = "\n".join(((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()[-25:])
        raise KernelBuildError(f"building the {kind} kernel failed:\n{tail}")
    return lib


def build_cuda(
    out_dir: Path | None = None, *, arch_list: str | None = None, verbose: bool = False
) -> Path:
    """Compile the CUDA kernel with nvcc into the kernel cache (works without a GPU).

    Args:
        out_dir: Build folder (default :func:`kernel_cache_dir`).
        arch_list: ``TORCH_CUDA_ARCH_LIST`` (default :data:`DEFAULT_ARCH_LIST`).
        verbose: Show the compiler's output.

    Returns:
        Path of the built shared library.

    Raises:
        KernelBuildError: No CUDA toolkit, or the compilation failed.
    """
    home = find_cuda_home()
    if home is None:
        raise KernelBuildError(
            "no CUDA toolkit found (need bin/nvcc, include/cuda_runtime.h and "
            "lib64/libcudart.so or lib/libcudart.so); set CUDA_HOME to the toolkit folder"
        )
    env = dict(os.environ)
    env["CUDA_HOME"] = str(home)
    env["TORCH_CUDA_ARCH_LIST"] = arch_list or DEFAULT_ARCH_LIST
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MAX_JOBS", str(max(1, os.cpu_count() or 1)))
    assert cuda_library_dir(home) is not None
    return _run_build("cuda", out_dir or kernel_cache_dir("cuda"), env, verbose)


def build_cpu_jit(out_dir: Path | None = None, *, verbose: bool = False) -> Path:
    """Compile the C++ CPU kernel just in time into the kernel cache (developer fallback)."""
    return _run_build("cpu", out_dir or kernel_cache_dir("cpu"), dict(os.environ), verbose)


def load_cuda_library(path: Path) -> None:
    """Load a built CUDA kernel library into this process (no GPU needed to load)."""
    torch.ops.load_library(str(path))


def _load_cpu() -> None:
    if os.environ.get("MEDSSL_KERNEL_DISABLE") == "1":
        _STATUS.cpu_problem = "compiled kernels disabled by MEDSSL_KERNEL_DISABLE=1"
        return
    try:
        importlib.import_module("medssl.ops.bilateral._C")
        _STATUS.cpu, _STATUS.cpu_source = True, "installed extension"
        return
    except ImportError as exc:
        problem = f"the compiled CPU kernel cannot be imported ({exc})"
    cached = kernel_cache_dir("cpu") / "medssl_bilateral_cpu.so"
    if not cached.is_file() and os.environ.get("MEDSSL_KERNEL_JIT") == "1":
        try:
            cached = build_cpu_jit()
        except KernelBuildError as exc:
            problem += f"; just-in-time build failed: {str(exc).splitlines()[-1]}"
    if cached.is_file():
        try:
            torch.ops.load_library(str(cached))
            _STATUS.cpu, _STATUS.cpu_source = True, f"JIT build {cached}"
            return
        except OSError as exc:
            problem += f"; cached JIT build failed to load ({exc})"
    _STATUS.cpu_problem = problem


def _load_cuda() -> None:
    if os.environ.get("MEDSSL_KERNEL_DISABLE") == "1":
        _STATUS.cuda_problem = "compiled kernels disabled by MEDSSL_KERNEL_DISABLE=1"
        return
    if not torch.cuda.is_available():
        _STATUS.cuda_problem = "no CUDA device"
        return
    try:
        importlib.import_module("medssl.ops.bilateral._C_cuda")
        _STATUS.cuda, _STATUS.cuda_source = True, "installed extension"
        return
    except ImportError:
        pass
    cached = kernel_cache_dir("cuda") / "medssl_bilateral_cuda.so"
    if cached.is_file():
        try:
            load_cuda_library(cached)
            _STATUS.cuda, _STATUS.cuda_source = True, str(cached)
            return
        except OSError as exc:
            _STATUS.cuda_problem = f"the cached CUDA kernel failed to load ({exc})"
            return
    _STATUS.cuda_problem = "the CUDA kernel is not built (run `medssl ops build`)"


def load_cpu_kernel() -> KernelStatus:
    """Load the C++ CPU kernel (which also defines the op schemas), once."""
    if not (_STATUS.cpu or _STATUS.cpu_problem):
        _load_cpu()
    return _STATUS


def load_cuda_kernel() -> KernelStatus:
    """Load the CUDA kernel where a GPU is present, once (after the schemas exist)."""
    if not (_STATUS.cuda or _STATUS.cuda_problem):
        _load_cuda()
    return _STATUS
