"""Build script: metadata lives in pyproject.toml; this file adds the compiled kernels.

* The C++ CPU kernels of ``medssl::bilateral_filter`` and of the NLM stage's
  ``medssl::nlm_forward``/``nlm_backward`` (``medssl.ops.bilateral._C``) are always built,
  against the torch of the build environment: install without build isolation (the Makefile
  does) so that it is the torch the package runs with.
* The CUDA kernel is built here only with ``MEDSSL_BUILD_CUDA=1`` (the CUDA container image
  sets it); elsewhere ``medssl ops build`` compiles it into the kernel cache.
"""

from __future__ import annotations

import importlib.util
import os

from setuptools import setup

CSRC = "medssl/ops/bilateral/csrc"


def _extensions():
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # no errno and no FP traps: lets GCC if-convert and vectorise the exp in the inner loops
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    ext = [
        CppExtension(
            "medssl.ops.bilateral._C",
            [f"{CSRC}/bilateral_cpu.cpp", f"{CSRC}/nlm_cpu.cpp"],
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    ]
    if os.environ.get("MEDSSL_BUILD_CUDA") == "1":
        # the toolchain helpers, loaded by path: the package itself is not importable yet
        spec = importlib.util.spec_from_file_location(
            "_medssl_toolchain", "medssl/ops/bilateral/toolchain.py"
        )
        assert spec is not None and spec.loader is not None
        toolchain = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(toolchain)
        flags = toolchain.cuda_build_flags()
        ext.append(
            CUDAExtension(
                "medssl.ops.bilateral._C_cuda",
                [f"{CSRC}/bilateral_cuda.cpp", f"{CSRC}/bilateral_cuda_kernel.cu"],
                extra_compile_args={"cxx": ["-O3", "-std=c++20"], "nvcc": flags},
            )
        )
    return ext, {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
