"""A small training engine for self-supervised pretraining.

One function, :func:`fit`, runs a model whose ``forward(batch)`` returns a dict with a scalar
``"loss"`` (methods are building blocks; the engine knows nothing of MAE or contrastive
learning). It does the loop, AMP, gradient clipping, the learning-rate schedule, checkpoints
with exact resume, a progress line, TensorBoard logs and a ``metrics.jsonl``, and DDP when
started by ``torchrun``.

Exact resume: a checkpoint holds the model, optimiser, scheduler and grad-scaler states, the
step, and the torch/NumPy/Python RNG states; the data order is a function of the step (see
:class:`medssl.data.patches.StepBatchSampler`), so a run interrupted and resumed produces the
same weights as one that ran straight through.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from medssl.io import atomic_file, load_tensors_file, write_text
from medssl.ssl.distributed import DistInfo, all_reduce_mean, local_only

__all__ = [
    "EngineConfig",
    "FitResult",
    "cpu_has_fast_bf16",
    "fit",
    "load_checkpoint",
    "lr_factor",
]

CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_FINAL = "checkpoint_final.pt"
_REFUSED_HINT = (
    "use a checkpoint written by this version of medssl pretrain; those of earlier medssl "
    "builds hold NumPy objects and are not read: start a new run (its checkpoints resume and "
    "export)"
)


@dataclass(frozen=True)
class EngineConfig:
    """Training-loop settings.

    Attributes:
        steps: Optimiser steps of the whole run.
        batch_size: Global batch (split evenly over DDP ranks).
        optimizer: ``adamw`` or ``sgd`` (Nesterov, momentum 0.99, as nnU-Net).
        lr: Peak learning rate.
        weight_decay: Decoupled (AdamW) or L2 (SGD) weight decay; not applied to norms,
            biases and mask tokens.
        warmup_steps: Linear warm-up from 0.
        schedule: After warm-up: ``cosine`` to 0 or ``poly`` (``(1 - t)^0.9``, nnU-Net's).
        grad_clip: Max gradient norm (nnU-Net uses 12); 0 disables.
        amp: ``auto`` (bf16 on GPUs that support it, else fp16 with a grad scaler; bf16 on
            CPUs with native bf16 (AMX or AVX-512 BF16), else off), ``bf16``, ``fp16`` or
            ``off``.
        checkpoint_every: Steps between checkpoints (one is always written at the end).
        log_every: Steps between log lines/TensorBoard points.
        val_every: Steps between validation runs (0 = never).
        seed: Run seed (initialisation and data order).
    """

    steps: int = 1000
    batch_size: int = 2
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    schedule: Literal["cosine", "poly"] = "cosine"
    grad_clip: float = 12.0
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    checkpoint_every: int = 250
    log_every: int = 10
    val_every: int = 0
    seed: int = 0


def lr_factor(step: int, config: EngineConfig) -> float:
    """Multiplier of the peak LR for the update made at ``step`` (0-based)."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    t = min(1.0, (step - config.warmup_steps) / span)
    if config.schedule == "poly":
        return (1.0 - t) ** 0.9
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() <= 1 or "mask_token" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _optimizer(model: nn.Module, config: EngineConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.99, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def _amp_dtype(config: EngineConfig, device: torch.device) -> torch.dtype | None:
    if config.amp == "off":
        return None
    if config.amp == "bf16":
        return torch.bfloat16
    if config.amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX tiles or AVX-512 BF16): there bf16
    autocast made the MAE step 2.4x faster (benchmarks/pretrain); elsewhere bf16 is emulated,
    no gain was measured, and ``amp: auto`` stays in float32."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:
            continue
    return False


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (a file that loads with
    ``weights_only=True``): NumPy's key array becomes an int64 tensor."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),  # (version, tuple of ints, None): plain values already
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an engine checkpoint on the CPU (works on machines without the saving GPU).

    Only tensors and plain values are read (``weights_only=True``): nothing in the file runs.

    Raises:
        InputError: The file is refused (it holds other Python objects, as the checkpoints of
            earlier medssl builds did: NumPy's RNG state as an array), damaged, or not a
            checkpoint.
    """
    return load_tensors_file(path, hint=_REFUSED_HINT)


@dataclass
class FitResult:
    """What :func:`fit` leaves behind."""

    step: int
    checkpoint: Path
    finished: bool
    last_loss: float


class _Progress:
    """One line per ``log_every`` steps (a live bar when stderr is a terminal)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0, self.s0 = time.perf_counter(), start

    def update(self, step: int, logs: dict[str, float]) -> None:
        if not self.enabled:
            return
        rate = (step - self.s0) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        text = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
        line = f"step {step}/{self.total} {text} | {rate:.2f} it/s, eta {eta / 60:.1f} min"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def fit(
    model: nn.Module,
    make_loader: Callable[[int], Iterable[dict[str, Any]]],
    config: EngineConfig,
    run_dir: str | Path,
    *,
    dist_info: DistInfo | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    stop_after: int | None = None,
    verbose: bool = True,
) -> FitResult:
    """Train ``model`` for ``config.steps`` optimiser steps.

    Args:
        model: ``forward(batch) -> {"loss": scalar, ...}``; other scalar entries are logged.
        make_loader: ``make_loader(start_step)`` gives this rank's batches from ``start_step``
            to the end (one per step).
        config: Loop settings.
        run_dir: Output folder: ``checkpoint_latest.pt``, ``checkpoint_final.pt``,
            ``metrics.jsonl``, ``tensorboard/``.
        dist_info: From :func:`medssl.ssl.distributed.setup_distributed` (single process if
            omitted).
        resume: Continue from ``run_dir/checkpoint_latest.pt`` (an error if missing).
        metadata: Stored in every checkpoint under ``"medssl"`` (plans, preprocessing, ...).
        validate: ``validate(model) -> {name: value}`` run on rank 0 every ``val_every`` steps
            and at the end (the model is in eval mode, gradients off).
        stop_after: Stop (with a checkpoint) once this step is reached, as a job that hits its
            wall-time limit would; ``resume=True`` continues.

    Returns:
        The step reached, the last checkpoint written and whether the run is complete.
    """
    info = dist_info or DistInfo()
    run = Path(run_dir)
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
    device = info.device
    model.to(device)
    for p in model.parameters():  # a previous stage's gradients must not reach this one's
        p.grad = None
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    amp_dtype = _amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start = 0
    latest = run / CHECKPOINT_LATEST
    if resume:
        if not latest.is_file():
            raise FileNotFoundError(f"{latest}: no checkpoint to resume from")
        ckpt = load_checkpoint(latest)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start = int(ckpt["step"])
        rng = ckpt["rng"][info.rank] if info.rank < len(ckpt["rng"]) else ckpt["rng"][0]
        _set_rng_state(rng)
    else:
        torch.manual_seed(config.seed + info.rank)
        np.random.seed((config.seed + info.rank) % 2**32)
        random.seed(config.seed + info.rank)

    net: nn.Module = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    writer = None
    metrics = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tensorboard"), purge_step=start)
        metrics_file = run / "metrics.jsonl"
        if resume and metrics_file.is_file():  # drop rows past the checkpoint (a crash)
            kept = [
                line
                for line in metrics_file.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start
            ]
            if kept:
                write_text(metrics_file, "".join(line + "\n" for line in kept))
            else:  # nothing before the checkpoint: start the log afresh
                metrics_file.unlink()
        metrics = metrics_file.open("a")
    stop = config.steps if stop_after is None else min(config.steps, stop_after)
    progress = _Progress(config.steps, start, verbose and info.is_main)

    def checkpoint(step: int, final: bool) -> Path:
        rng_all = [_rng_state()]
        if info.distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * info.world_size
            dist.all_gather_object(gathered, rng_all[0])
            rng_all = gathered
        path = run / (CHECKPOINT_FINAL if final else CHECKPOINT_LATEST)
        if info.is_main:
            payload = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "rng": rng_all,
                "engine": asdict(config),
                "world_size": info.world_size,
                "medssl": metadata or {},
            }
            _save(run / CHECKPOINT_LATEST, payload)
            if final:
                _save(path, payload)
        if info.distributed:
            import torch.distributed as dist

            dist.barrier()
        return path

    def run_validation(step: int) -> None:
        if validate is None or not info.is_main:
            return
        model.eval()
        # rank 0 alone: objectives must not gather across processes here
        with torch.no_grad(), _autocast(device, amp_dtype), local_only():
            vals = validate(model)
        model.train()
        _log(step, {f"val/{k}": v for k, v in vals.items()})

    def _log(step: int, logs: dict[str, float]) -> None:
        if writer is not None:
            for k, v in logs.items():
                writer.add_scalar(k, v, step)
        if metrics is not None:
            metrics.write(json.dumps({"step": step, **logs}) + "\n")
            metrics.flush()

    step = start
    last_loss = float("nan")
    model.train()
    t_last, last_logged = time.perf_counter(), start
    try:
        if start == 0 and config.val_every:
            run_validation(0)  # the untrained network's loss: the curve's reference point
        loader = make_loader(start)
        for batch in loader:
            if step >= stop:
                break
            batch = {
                k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()
            }
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, amp_dtype):
                out = net(batch)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at step {step}; lower the learning rate or "
                    "turn AMP off (amp: off)"
                )
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            gnorm = (
                nn.utils.clip_grad_norm_(trained, config.grad_clip)
                if config.grad_clip > 0
                else torch.zeros(())
            )
            lr_used = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if step % config.log_every == 0 or step == stop:
                reduced = {
                    k: float(all_reduce_mean(v.detach().float()))
                    for k, v in out.items()
                    if torch.is_tensor(v) and v.dim() == 0
                }
                now = time.perf_counter()
                n, last_logged = step - last_logged, step
                logs = {
                    **{f"train/{k}": v for k, v in reduced.items()},
                    "train/lr": lr_used,
                    "train/grad_norm": float(gnorm),
                    "train/samples_per_s": n * config.batch_size / max(now - t_last, 1e-9),
                }
                t_last = now
                last_loss = reduced["loss"]
                _log(step, logs)
                progress.update(step, {"loss": last_loss, "lr": logs["train/lr"]})
            if config.val_every and step % config.val_every == 0:
                run_validation(step)
            if step % config.checkpoint_every == 0 and step < stop:
                checkpoint(step, final=False)
        finished = step >= config.steps
        if finished and config.val_every and step % config.val_every:
            run_validation(step)
        path = checkpoint(step, final=finished)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
        if metrics is not None:
            metrics.close()
    return FitResult(step, path, finished, last_loss)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
