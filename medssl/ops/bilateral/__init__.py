"""The bilateral filter operator ``medssl::bilateral_filter``: one op schema, three
implementations (C++ CPU kernel, CUDA kernel, PyTorch reference), per-voxel sigma maps and
exact, deterministic gradients. Importing this package loads the compiled kernels and
registers the fake and autograd rules, once."""

from medssl.ops.bilateral import _registry, loader
from medssl.ops.bilateral.functional import (
    BACKENDS,
    RADIUS_FACTOR,
    SIGMA_EPS,
    backend,
    bilateral_filter,
    dispatch_table,
    joint_bilateral_filter,
    radius_for_sigma,
    set_backend,
)
from medssl.ops.bilateral.module import BilateralFilter
from medssl.ops.bilateral.reference import (
    bilateral_filter_backward_reference,
    bilateral_filter_reference,
)

_status = loader.load_cpu_kernel()
_registry.register(schemas_from_cpp=_status.cpu)
loader.load_cuda_kernel()
set_backend(None)

__all__ = [
    "BACKENDS",
    "RADIUS_FACTOR",
    "SIGMA_EPS",
    "BilateralFilter",
    "backend",
    "bilateral_filter",
    "bilateral_filter_backward_reference",
    "bilateral_filter_reference",
    "dispatch_table",
    "joint_bilateral_filter",
    "radius_for_sigma",
    "set_backend",
]
