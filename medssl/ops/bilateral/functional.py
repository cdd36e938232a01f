"""``bilateral_filter``: the public function, its argument checks and the backend switch.

Backends (``MEDSSL_BILATERAL_BACKEND``, read at import, or :func:`set_backend`):

* ``auto`` (default): the compiled kernel of the tensor's device where one is loaded (and, for
  CUDA, agreed with the reference on a check input), otherwise the reference, with one
  warning;
* ``reference``: the pure-PyTorch reference (autograd through its taps);
* ``cpu`` / ``cuda``: that compiled kernel, and an error for tensors on another device or where
  it is not available (for tests and benchmarks).

The choice is made per device type once, outside the op call, so the call itself stays free
of host synchronisation and traceable by ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from medssl.ops.bilateral import loader
from medssl.ops.bilateral.reference import SIGMA_EPS, bilateral_filter_reference

__all__ = [
    "BACKENDS",
    "JOINT_SCALE",
    "RADIUS_FACTOR",
    "SIGMA_EPS",
    "backend",
    "bilateral_filter",
    "dispatch_table",
    "joint_bilateral_filter",
    "radius_for_sigma",
    "set_backend",
]

BACKENDS = ("auto", "reference", "cpu", "cuda")
ENV_VAR = "MEDSSL_BILATERAL_BACKEND"

#: ``radius = ceil(RADIUS_FACTOR * sigma_max)``: the window reaches 2 sigma of the largest
#: allowed spatial sigma; the Gaussian beyond it holds < 5 % of its 1D mass.
RADIUS_FACTOR = 2.0

_backend = "auto"
# device type -> "op" | "reference" | an error message
_dispatch: dict[str, str] = {}


def radius_for_sigma(sigma_max: float, factor: float = RADIUS_FACTOR) -> int:
    """Static window radius for spatial sigmas bounded by ``sigma_max`` (voxels):
    ``ceil(factor * sigma_max)``."""
    if sigma_max < 0:
        raise ValueError(f"sigma_max must be >= 0, got {sigma_max}")
    return math.ceil(factor * sigma_max - 1e-9)


def backend() -> str:
    """The selected backend (see the module docstring)."""
    return _backend


def dispatch_table() -> dict[str, str]:
    """Per device type, what a call uses: ``"op"`` (compiled kernel), ``"reference"``, or an
    error message."""
    return dict(_dispatch)


def _validate_cuda() -> str | None:
    """Compare the CUDA kernel with the reference on a small input; a problem or ``None``."""
    try:
        gen = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(2, 1, 9, 13, device="cuda", generator=gen, requires_grad=True)
        sig = [torch.rand(2, 1, 9, 13, device="cuda", generator=gen) * 2 + 0.2 for _ in range(2)]
        sr = torch.rand(2, 1, 9, 13, device="cuda", generator=gen) + 0.3
        sig = [s.requires_grad_() for s in sig]
        sr.requires_grad_()
        out, _ = torch.ops.medssl.bilateral_filter(x, sig, sr, [2, 3])
        ref, _ = bilateral_filter_reference(x, sig, sr, [2, 3])
        g = torch.randn_like(out)
        got = torch.autograd.grad(out, [x, *sig, sr], g)
        want = torch.autograd.grad(ref, [x, *sig, sr], g)
        err = max(
            float((out - ref).abs().max()),
            *(
                float((a - b).abs().max() / (b.abs().max() + 1e-6))
                for a, b in zip(got, want, strict=True)
            ),
        )
        if not math.isfinite(err) or err > 1e-3:
            return f"the CUDA kernel disagrees with the reference (max error {err:.3g})"
        return None
    except Exception as exc:  # a broken build must not break medssl
        return f"the CUDA kernel failed its check ({type(exc).__name__}: {exc})"


def set_backend(name: str | None = None) -> None:
    """Select the backend (``None``: from ``MEDSSL_BILATERAL_BACKEND``, default ``auto``) and
    rebuild the per-device dispatch table."""
    global _backend
    name = (name or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(BACKENDS)}, got {name!r}")
    _backend = name
    st = loader.status()
    table: dict[str, str] = {}
    if name == "reference":
        table = {"cpu": "reference", "cuda": "reference"}
    else:
        if st.cpu:
            table["cpu"] = "op" if name in ("auto", "cpu") else f"backend {name!r} on a CPU tensor"
        elif name == "cpu":
            table["cpu"] = f"no compiled CPU kernel: {st.cpu_problem}"
        else:
            table["cpu"] = "reference"
        if st.cuda and name == "auto" and not st.cuda_validated and st.cuda_problem is None:
            problem = _validate_cuda()
            if problem is None:
                st.cuda_validated = True
            else:
                st.cuda_problem = problem
        cuda_ok = st.cuda and (st.cuda_validated or name == "cuda")
        if cuda_ok:
            table["cuda"] = (
                "op" if name in ("auto", "cuda") else f"backend {name!r} on a CUDA tensor"
            )
        elif name == "cuda":
            table["cuda"] = f"no usable CUDA kernel: {st.cuda_problem}"
        else:
            table["cuda"] = "reference"
    _dispatch.clear()
    _dispatch.update(table)
    if name == "auto":
        if not st.cpu:
            warnings.warn(
                f"medssl: {st.cpu_problem}; the bilateral filter uses the slower PyTorch "
                "reference on the CPU (reinstall medssl with a C++ compiler present, or set "
                "MEDSSL_KERNEL_JIT=1)",
                RuntimeWarning,
                stacklevel=2,
            )
        if torch.cuda.is_available() and table["cuda"] != "op":
            warnings.warn(
                f"medssl: {st.cuda_problem}; the bilateral filter uses the PyTorch reference on "
                "the GPU (run `medssl ops build`)",
                RuntimeWarning,
                stacklevel=2,
            )


def _as_map(value: float | Tensor, name: str, x: Tensor, dtype: torch.dtype) -> Tensor:
    shape = (x.shape[0], 1, *x.shape[2:])
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating-point tensor, got {value.dtype}")
        if value.device != x.device:
            raise ValueError(f"{name} is on {value.device}, x on {x.device}")
        try:
            torch.broadcast_shapes(value.shape, shape)
            expanded = value.to(dtype).expand(shape)
        except RuntimeError:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} is not broadcastable to (B, 1, *spatial) "
                f"= {shape}"
            ) from None
        return expanded
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite value >= 0, got {value}")
    return x.new_full((1,) * x.dim(), float(value), dtype=dtype).expand(shape)


def _radius(radius: int | Sequence[int], nd: int) -> list[int]:
    values = [radius] * nd if isinstance(radius, int) else [int(r) for r in radius]
    if len(values) != nd or any(r < 0 for r in values):
        raise ValueError(f"radius must be an int >= 0 or {nd} of them, got {radius!r}")
    return values


def bilateral_filter(
    x: Tensor,
    sigma_spatial: Sequence[float | Tensor],
    sigma_range: float | Tensor,
    radius: int | Sequence[int],
) -> Tensor:
    """Bilateral filter with per-voxel sigma maps and exact gradients.

    ``y_i = sum_j w_ij x_j / sum_j w_ij`` over the window ``|j_a - i_a| <= radius_a``, with
    ``w_ij = exp(-sum_a d_a^2 / (2 s_a(i)^2) - ||x_i - x_j||^2 / (2 r(i)^2))``: Gaussian
    spatial weights per axis and a range weight, using the sigmas of the centre voxel ``i``.
    For C > 1 the squared range distance is summed over channels and all channels share the
    weights. Sigmas below :data:`SIGMA_EPS` are clamped to it (0 = no smoothing along that
    axis / in range). Borders: reflect about the edge voxel, clamped where an axis is shorter
    than the radius (an axis of size 1 behaves as if absent). Gradients flow to ``x`` and to
    every sigma given as a tensor; the backward is deterministic.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating-point input.
        sigma_spatial: One spatial sigma per spatial axis in the tensor's axis order
            (``(sigma_y, sigma_x)`` or ``(sigma_z, sigma_y, sigma_x)``: a model's sigma_x acts
            along W), in voxels; floats or tensors broadcastable to ``(B, 1, *spatial)``.
        sigma_range: Range sigma in the input's units; a float or a tensor broadcastable to
            ``(B, 1, *spatial)``.
        radius: Window radius (an int, or one per spatial axis). Static: for sigmas bounded
            by ``sigma_max`` use :func:`radius_for_sigma` (``ceil(2 * sigma_max)``).

    Returns:
        The filtered image, same shape and dtype as ``x``.

    Shape:
        - x: ``(B, C, *S)`` with ``S = (H, W)`` or ``(D, H, W)``
        - sigma maps: broadcastable to ``(B, 1, *S)``
        - output: ``(B, C, *S)``
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    nd = x.dim() - 2
    if len(sigma_spatial) != nd:
        raise ValueError(
            f"sigma_spatial needs {nd} entries (one per spatial axis, in the tensor's axis "
            f"order), got {len(sigma_spatial)}"
        )
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    axes = ("sigma_z", "sigma_y", "sigma_x")[3 - nd :]
    sig = [_as_map(s, n, x, dtype) for s, n in zip(sigma_spatial, axes, strict=True)]
    sr = _as_map(sigma_range, "sigma_range", x, dtype)
    rad = _radius(radius, nd)
    mode = _dispatch.get(x.device.type, "reference")
    if mode == "op":
        if x.device.type == "cuda" and x.shape[1] > 4:
            mode = "reference"  # the CUDA kernels handle up to 4 channels
        elif x.device.type == "cpu" and dtype != x.dtype and x.dtype != torch.float32:
            # the CPU kernel computes in float32/float64: half/bfloat16 inputs go through float32
            out, _ = torch.ops.medssl.bilateral_filter(x.float().contiguous(), sig, sr, rad)
            return out.to(x.dtype)
        else:
            out, _ = torch.ops.medssl.bilateral_filter(x.contiguous(), sig, sr, rad)
            return out
    if mode == "reference":
        out, _ = bilateral_filter_reference(x, sig, sr, rad)
        return out.to(x.dtype)
    raise RuntimeError(f"bilateral_filter on {x.device.type}: {mode}")


#: Scale of the filtered image's channels in :func:`joint_bilateral_filter` (a power of two:
#: scaling by it and back is exact in floating point).
JOINT_SCALE = 2.0**-14


def joint_bilateral_filter(
    x: Tensor,
    guide: Tensor,
    sigma_spatial: Sequence[float | Tensor],
    sigma_range: float | Tensor,
    radius: int | Sequence[int],
) -> Tensor:
    """Joint (cross) bilateral filter: range weights from ``guide``, values from ``x``.

    ``y_i = sum_j w_ij x_j / sum_j w_ij`` with
    ``w_ij = exp(-sum_a d_a^2 / (2 s_a(i)^2) - ||g_i - g_j||^2 / (2 r(i)^2))``. With a
    pre-smoothed copy of a noisy image as the guide, the range weights no longer follow the
    noise of single pixels, so a range sigma that keeps edges still averages a flat region
    fully (for the plain filter, two pixels of the same tissue differ by about sqrt(2) times
    the noise).

    Computed by :func:`bilateral_filter` on the channels ``(JOINT_SCALE * x, guide)``: the
    range distance is then the guide's plus ``JOINT_SCALE^2 ||x_i - x_j||^2`` (``2^-28`` of
    it: below float32 resolution against any range sigma above ~0.1 % of the image's
    values), the first channels of the output are ``JOINT_SCALE`` times the answer, and every
    backend, gradient and check of the operator applies unchanged (the CUDA kernel handles
    ``C_x + C_guide <= 4``).

    Shape:
        - x: ``(B, C, *S)``; guide: ``(B, C_guide, *S)``
        - sigma maps: broadcastable to ``(B, 1, *S)``
        - output: ``(B, C, *S)``
    """
    if (
        not isinstance(guide, Tensor)
        or guide.shape[0] != x.shape[0]
        or guide.shape[2:] != x.shape[2:]
    ):
        got = tuple(guide.shape) if isinstance(guide, Tensor) else type(guide).__name__
        raise ValueError(
            f"guide must be (B, C_guide, *spatial) with x's batch and spatial sizes "
            f"{(x.shape[0], '*', *x.shape[2:])}, got {got}"
        )
    both = torch.cat([x * JOINT_SCALE, guide.to(x.dtype)], 1)
    out = bilateral_filter(both, sigma_spatial, sigma_range, radius)
    return out[:, : x.shape[1]] / JOINT_SCALE
