"""DDP plumbing for ``torchrun``: process group set-up, rank helpers, gathers."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "all_reduce_mean",
    "cleanup_distributed",
    "local_only",
    "setup_distributed",
]

_LOCAL_ONLY = False


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within this block :func:`all_gather_with_grad` returns its input (no collective): for
    work one rank does alone, such as validation on rank 0."""
    global _LOCAL_ONLY
    previous, _LOCAL_ONLY = _LOCAL_ONLY, True
    try:
        yield
    finally:
        _LOCAL_ONLY = previous


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands. ``world_size == 1`` without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1).

    The backend is NCCL on GPUs and gloo on CPUs. ``device="auto"`` takes this process's local
    GPU when there is one, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        dev = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        # under torchrun each process takes its own GPU, whatever index the config names
        if dev.type == "cuda" and (dev.index is None or world > 1):
            dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # rank 0 preprocesses the collection while the others wait at a barrier: allow it
        minutes = float(os.environ.get("MEDSSL_DIST_TIMEOUT_MIN", "180"))
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=minutes),
        )
    return DistInfo(rank, world, local, dev)


def cleanup_distributed() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (the tensor itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends each rank the gradient of its own slice.

    Every rank computes its loss on the gathered tensor, so the gradient of the *sum* of the
    ranks' losses with respect to this rank's input is the sum over ranks of their gradients
    for this slice: backward all-reduces the full gradient and keeps this rank's part. With
    DDP's averaging of parameter gradients, the result equals single-process training on the
    concatenated batch when each rank's loss is the global-batch loss.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``(N, ...)``, the same ``N`` on every rank) over ranks along dim 0,
    in rank order, keeping the autograd path to this rank's part; ``x`` itself without a
    process group.

    Use it for losses whose negatives or graph nodes span the global batch (contrastive,
    graph matching). Each rank then computes the same global loss; DDP averages the parameter
    gradients over ranks, so the engine's step equals the single-process step on the whole
    batch.
    """
    if _LOCAL_ONLY or not (dist.is_available() and dist.is_initialized()):
        return x
    if dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
