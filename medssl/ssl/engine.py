"""A small training engine for self-supervised pretraining.

One function, :func:`fit`, runs a model whose ``forward(batch)`` returns a dict with a scalar
``"loss"`` (methods are building blocks; the engine knows nothing of MAE or contrastive
learning). It does the loop, AMP, gradient clipping, the learning-rate schedule, checkpoints
with exact resume, a progress line, TensorBoard logs and a ``metrics.jsonl``, and DDP when
started by ``torchrun``. Its settings are the recipe's ``train`` section
(:class:`medssl.ssl.config.TrainSection`). ``fit`` assembles named parts:

* :func:`train_state`: the model on its device, its optimiser, LR schedule and grad scaler;
* :class:`Checkpoints`: save (``checkpoint_latest.pt``/``checkpoint_final.pt``) and resume;
* :class:`MetricsLog`: ``metrics.jsonl`` and TensorBoard (trimmed to the checkpoint on resume);
* :func:`optimisation_step`: one forward/backward/update;
* :func:`train_loop`: the steps with their logging, validation and checkpoint cadence.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl.errors import TrainingDivergedError
from medssl.io import atomic_file, load_tensors_file, write_text
from medssl.ssl.amp import loss_scale
from medssl.ssl.config import TrainSection
from medssl.ssl.distributed import DistInfo, all_reduce_mean, local_only

__all__ = [
    "Checkpoints",
    "EngineConfig",
    "FitResult",
    "MetricsLog",
    "StepResult",
    "TrainState",
    "cpu_has_fast_bf16",
    "fit",
    "load_checkpoint",
    "lr_factor",
    "optimisation_step",
    "run_validation",
    "seed_everything",
    "train_loop",
    "train_state",
]

CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_FINAL = "checkpoint_final.pt"
_REFUSED_HINT = (
    "use a checkpoint written by this version of medssl pretrain; those of earlier medssl "
    "builds hold NumPy objects and are not read: start a new run (its checkpoints resume and "
    "export)"
)


#: The loop's settings: the recipe's ``train`` section itself (one declaration; the old
#: name is kept for callers that build one directly).
EngineConfig = TrainSection


def lr_factor(step: int, config: TrainSection) -> float:
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


def _optimizer(model: nn.Module, config: TrainSection) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.99, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def _amp_dtype(config: TrainSection, device: torch.device) -> torch.dtype | None:
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


# --- the parts of the loop -------------------------------------------------------------------


@dataclass
class TrainState:
    """What the optimisation steps change.

    Attributes:
        model: The objective (``forward(batch) -> {"loss": ...}``), on ``device``.
        net: What the steps call: ``model``, or its DDP wrapper.
        optimizer: AdamW or SGD over ``model``'s parameter groups.
        scheduler: The warm-up and decay of :func:`lr_factor`.
        scaler: The fp16 grad scaler (disabled otherwise).
        amp_dtype: Autocast dtype, ``None`` for float32.
        device: Where the model and batches are.
        trained: The parameters that get gradients (those clipped).
    """

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    device: torch.device
    trained: list[nn.Parameter]


def train_state(model: nn.Module, config: TrainSection, device: torch.device) -> TrainState:
    """Move ``model`` to ``device``, drop gradients a previous stage left, and build its
    optimiser, LR schedule and grad scaler (``net`` is ``model``: wrap it for DDP after the
    states are restored)."""
    model.to(device)
    for p in model.parameters():  # a previous stage's gradients must not reach this one's
        p.grad = None
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    amp_dtype = _amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainState(model, model, optimizer, scheduler, scaler, amp_dtype, device, trained)


def seed_everything(seed: int, rank: int) -> None:
    """Seed torch, NumPy and Python's RNGs for a fresh run (``seed + rank`` on each rank)."""
    torch.manual_seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    random.seed(seed + rank)


class Checkpoints:
    """Saving and resuming: ``checkpoint_latest.pt`` (and ``checkpoint_final.pt`` at the
    end) with the model, optimiser, scheduler and scaler states, the step, every rank's RNG
    states, the loop's settings, the world size and ``metadata`` (under ``"medssl"``)."""

    def __init__(
        self,
        run: Path,
        state: TrainState,
        config: TrainSection,
        info: DistInfo,
        metadata: dict[str, Any] | None,
    ) -> None:
        self.run, self.state, self.config, self.info = run, state, config, info
        self.metadata = metadata or {}

    @property
    def latest(self) -> Path:
        return self.run / CHECKPOINT_LATEST

    def resume(self) -> int:
        """Restore the states of ``checkpoint_latest.pt`` (this rank's RNG states); returns
        its step.

        Raises:
            FileNotFoundError: There is no checkpoint to resume from.
        """
        if not self.latest.is_file():
            raise FileNotFoundError(f"{self.latest}: no checkpoint to resume from")
        ckpt = load_checkpoint(self.latest)
        st, rank = self.state, self.info.rank
        st.model.load_state_dict(ckpt["model"])
        st.optimizer.load_state_dict(ckpt["optimizer"])
        st.scheduler.load_state_dict(ckpt["scheduler"])
        st.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0])
        return int(ckpt["step"])

    def save(self, step: int, final: bool) -> Path:
        """Write ``checkpoint_latest.pt`` (and ``checkpoint_final.pt`` when ``final``) on
        rank 0, after gathering every rank's RNG states; returns the path of the kind asked."""
        info = self.info
        rng_all = [_rng_state()]
        if info.distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * info.world_size
            dist.all_gather_object(gathered, rng_all[0])
            rng_all = gathered
        path = self.run / (CHECKPOINT_FINAL if final else CHECKPOINT_LATEST)
        if info.is_main:
            st = self.state
            payload = {
                "model": st.model.state_dict(),
                "optimizer": st.optimizer.state_dict(),
                "scheduler": st.scheduler.state_dict(),
                "scaler": st.scaler.state_dict(),
                "step": step,
                "rng": rng_all,
                "engine": self.config.model_dump(exclude={"device"}),
                "world_size": info.world_size,
                "medssl": self.metadata,
            }
            _save(self.latest, payload)
            if final:
                _save(path, payload)
        if info.distributed:
            import torch.distributed as dist

            dist.barrier()
        return path


class MetricsLog:
    """The run's logs on rank 0: TensorBoard scalars (``tensorboard/``) and one JSON line per
    logged step (``metrics.jsonl``). On resume the rows past the checkpoint's step (those of a
    crashed run) are dropped first. Other ranks log nothing."""

    def __init__(self, run: Path, start: int, resume: bool, enabled: bool) -> None:
        self.writer: Any = None
        self.file: Any = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run / "tensorboard"), purge_step=start)
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
        self.file = metrics_file.open("a")

    def log(self, step: int, logs: dict[str, float]) -> None:
        """Add ``logs`` (name -> value) at ``step``."""
        if self.writer is not None:
            for k, v in logs.items():
                self.writer.add_scalar(k, v, step)
        if self.file is not None:
            self.file.write(json.dumps({"step": step, **logs}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.file is not None:
            self.file.close()


@dataclass
class StepResult:
    """One optimisation step's outputs: the model's dict (``"loss"`` and other scalars), the
    learning rate the update used and the gradient norm before clipping (0 unclipped)."""

    out: dict[str, Any]
    lr: float
    grad_norm: torch.Tensor


def optimisation_step(
    state: TrainState, batch: dict[str, Any], config: TrainSection, step: int
) -> StepResult:
    """Forward (under autocast), backward (scaled), unscale, clip, step the optimiser, the
    scaler and the LR schedule. ``step`` is the step being taken, counted from 1 as the log
    counts (for the error message).

    Raises:
        TrainingDivergedError: The loss is not finite (on any rank).
    """
    batch = {
        k: v.to(state.device, non_blocking=True) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }
    state.optimizer.zero_grad(set_to_none=True)
    scale = state.scaler.get_scale() if state.scaler.is_enabled() else 1.0
    with _autocast(state.device, state.amp_dtype), loss_scale(scale):
        out = state.net(batch)
    loss = out["loss"]
    # every rank stops at the same step (one rank raising alone would leave the others
    # waiting in the gradient all-reduce): the mean over ranks is finite only if all are
    reduced = all_reduce_mean(loss.detach().float())
    if not torch.isfinite(reduced):
        raise _diverged(state, step, reduced)
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(state.optimizer)
    gnorm = (
        nn.utils.clip_grad_norm_(state.trained, config.grad_clip)
        if config.grad_clip > 0
        else torch.zeros(())
    )
    lr_used = state.optimizer.param_groups[0]["lr"]
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return StepResult(out, lr_used, gnorm)


def _diverged(state: TrainState, step: int, loss: torch.Tensor) -> TrainingDivergedError:
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(state.amp_dtype, "float32")
    lr = state.optimizer.param_groups[0]["lr"]
    hints = ["lower train.lr (or lengthen train.warmup_steps)"]
    if state.amp_dtype is not None:
        hints.insert(0, 'set train.amp: "off" (float32)')
    return TrainingDivergedError(
        f"the training loss is {loss.item()} (not finite) at step {step} "
        f"({precision}, learning rate {lr:.3g}); the run folder keeps its last checkpoint",
        hint=" or ".join(hints) + ", then start a new run folder",
    )


def run_validation(
    state: TrainState,
    validate: Callable[[nn.Module], dict[str, float]] | None,
    info: DistInfo,
    metrics: MetricsLog,
    step: int,
) -> None:
    """``validate(model)`` on rank 0 in eval mode without gradients, logged as ``val/...``."""
    if validate is None or not info.is_main:
        return
    state.model.eval()
    # rank 0 alone: objectives must not gather across processes here
    with torch.no_grad(), _autocast(state.device, state.amp_dtype), local_only():
        vals = validate(state.model)
    state.model.train()
    metrics.log(step, {f"val/{k}": v for k, v in vals.items()})


def train_loop(
    state: TrainState,
    batches: Iterable[dict[str, Any]],
    config: TrainSection,
    start: int,
    stop: int,
    *,
    checkpoints: Checkpoints,
    metrics: MetricsLog,
    progress: _Progress,
    validate: Callable[[nn.Module], dict[str, float]] | None,
    info: DistInfo,
) -> tuple[int, float]:
    """Steps from ``start`` until ``stop`` (or the batches run out): log every ``log_every``
    steps and at ``stop``, validate every ``val_every``, checkpoint every
    ``checkpoint_every`` before ``stop``. Returns the step reached and the last logged loss."""
    step = start
    last_loss = float("nan")
    t_last, last_logged = time.perf_counter(), start
    for batch in batches:
        if step >= stop:
            break
        result = optimisation_step(state, batch, config, step + 1)
        step += 1
        if step % config.log_every == 0 or step == stop:
            reduced = {
                k: float(all_reduce_mean(v.detach().float()))
                for k, v in result.out.items()
                if torch.is_tensor(v) and v.dim() == 0
            }
            now = time.perf_counter()
            n, last_logged = step - last_logged, step
            logs = {
                **{f"train/{k}": v for k, v in reduced.items()},
                "train/lr": result.lr,
                "train/grad_norm": float(result.grad_norm),
                "train/samples_per_s": n * config.batch_size / max(now - t_last, 1e-9),
            }
            t_last = now
            last_loss = reduced["loss"]
            metrics.log(step, logs)
            progress.update(step, {"loss": last_loss, "lr": logs["train/lr"]})
        if config.val_every and step % config.val_every == 0:
            run_validation(state, validate, info, metrics, step)
        if step % config.checkpoint_every == 0 and step < stop:
            checkpoints.save(step, final=False)
    return step, last_loss


def fit(
    model: nn.Module,
    make_loader: Callable[[int], Iterable[dict[str, Any]]],
    config: TrainSection,
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

    The parts: :func:`train_state` (optimiser, schedule, scaler), :class:`Checkpoints`
    (resume and save), :func:`seed_everything`, :class:`MetricsLog`, :func:`train_loop` (of
    :func:`optimisation_step` and :func:`run_validation`).

    Args:
        model: ``forward(batch) -> {"loss": scalar, ...}``; other scalar entries are logged.
        make_loader: ``make_loader(start_step)`` gives this rank's batches from ``start_step``
            to the end (one per step).
        config: Loop settings (the recipe's ``train`` section, or a copy with a stage's
            steps; ``device`` is not read here).
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
    state = train_state(model, config, info.device)
    checkpoints = Checkpoints(run, state, config, info, metadata)
    if resume:
        start = checkpoints.resume()
    else:
        start = 0
        seed_everything(config.seed, info.rank)
    if info.distributed:
        device = info.device
        state.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    metrics = MetricsLog(run, start, resume, info.is_main)
    stop = config.steps if stop_after is None else min(config.steps, stop_after)
    progress = _Progress(config.steps, start, verbose and info.is_main)
    model.train()
    try:
        if start == 0 and config.val_every:
            run_validation(state, validate, info, metrics, 0)  # the untrained network's loss
        step, last_loss = train_loop(
            state,
            make_loader(start),
            config,
            start,
            stop,
            checkpoints=checkpoints,
            metrics=metrics,
            progress=progress,
            validate=validate,
            info=info,
        )
        finished = step >= config.steps
        if finished and config.val_every and step % config.val_every:
            run_validation(state, validate, info, metrics, step)
        path = checkpoints.save(step, final=finished)
    finally:
        progress.close()
        metrics.close()
    return FitResult(step, path, finished, last_loss)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
