"""Where the CUDA toolkit is and which GPUs to compile for; no torch import here, so that
``setup.py`` can use it too.

``nvcc`` on the PATH does not tell where the toolkit's libraries are (``/usr/local/bin/nvcc``
next to a toolkit in ``/usr/local/cuda`` makes PyTorch guess ``/usr/local`` and the link fails),
so the toolkit folder is the first candidate that holds ``bin/nvcc``, ``include/cuda_runtime.h``
and ``lib/libcudart.so`` or ``lib64/libcudart.so``.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

__all__ = ["DEFAULT_ARCH_LIST", "cuda_build_flags", "cuda_library_dir", "find_cuda_home"]

#: Compute capabilities compiled by default: Turing to Hopper, plus PTX for newer GPUs.
#: CUDA 13 no longer targets anything below sm_75.
DEFAULT_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"


def _is_toolkit(path: Path) -> bool:
    return (
        (path / "bin" / "nvcc").is_file()
        and (path / "include" / "cuda_runtime.h").is_file()
        and cuda_library_dir(path) is not None
    )


def cuda_library_dir(home: str | Path) -> Path | None:
    """The folder of ``home`` that holds ``libcudart.so`` (``lib64`` or ``lib``), if any."""
    for sub in ("lib64", "lib"):
        if (Path(home) / sub / "libcudart.so").exists():
            return Path(home) / sub
    return None


def find_cuda_home() -> Path | None:
    """The CUDA toolkit folder, or ``None`` when there is no usable toolkit.

    Candidates in order: ``$CUDA_HOME``, ``$CUDA_PATH``, the folder above the real path of
    ``nvcc`` on the PATH, ``/usr/local/cuda`` and ``/usr/local/cuda-*`` (newest first).
    """
    candidates: list[str] = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", "")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    candidates.append("/usr/local/cuda")
    candidates.extend(sorted(glob.glob("/usr/local/cuda-*"), reverse=True))
    for c in candidates:
        if c and _is_toolkit(Path(c)):
            return Path(c)
    return None


def cuda_build_flags() -> list[str]:
    """nvcc flags of the kernel (the architectures come from ``TORCH_CUDA_ARCH_LIST``)."""
    return ["-O3", "-std=c++20", "-lineinfo", "--expt-relaxed-constexpr"]
