"""``medssl pretrain``: volumes in, an nnU-Net-ready pretrained U-Net out.

Glue only: it wires the building blocks (volume cache, patch dataset, plans-built network, MAE
method, engine) from a :class:`medssl.ssl.config.PretrainConfig`. The run folder holds the
resolved ``config.yaml``, ``volumes.json`` (the cache manifest), the checkpoints,
``metrics.jsonl`` and ``tensorboard/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from medssl import __version__
from medssl.data.fetch import cache_root
from medssl.data.patches import PatchDataset, StepBatchSampler
from medssl.data.volumes import CachedVolume, Preprocessing, discover_volumes, preprocess
from medssl.io.errors import InputError
from medssl.models.unet import build_network, load_plans
from medssl.ssl.config import PretrainConfig, load_config
from medssl.ssl.distributed import DistInfo, cleanup_distributed, setup_distributed
from medssl.ssl.engine import CHECKPOINT_LATEST, EngineConfig, FitResult, fit
from medssl.ssl.mae3d import MAEObjective, MaskedAutoencoder
from medssl.transforms.ssl import AugmentConfig, ssl_augmentation

__all__ = ["METHODS", "build_objective", "prepare_volumes", "pretrain"]

log = logging.getLogger("medssl.pretrain")

METHODS = ("mae", "s3d")
Method = Literal["mae", "s3d"]
CHECKPOINT_FORMAT = "medssl-pretrain/1"


def _patch_size(cfg: PretrainConfig, plans: dict) -> list[int]:
    from medssl.models.unet import _configuration_dict

    conf = _configuration_dict(plans, cfg.model.configuration)
    patch = list(cfg.model.patch_size or conf["patch_size"])
    if len(patch) != len(conf["patch_size"]):
        raise InputError(
            f"model.patch_size {patch} has {len(patch)} axes but configuration "
            f"{cfg.model.configuration!r} is {len(conf['patch_size'])}D"
        )
    strides = conf["architecture"]["arch_kwargs"]["strides"]
    total = [1] * len(patch)
    for s in strides:
        s = [s] * len(patch) if isinstance(s, int) else s
        total = [t * int(x) for t, x in zip(total, s, strict=True)]
    bad = [p for p, t in zip(patch, total, strict=True) if p % t]
    if bad:
        raise InputError(
            f"model.patch_size {patch} must be divisible by the network's total stride {total}"
        )
    if any(p % cfg.mae.block_size for p in patch):
        raise InputError(
            f"model.patch_size {patch} must be a multiple of mae.block_size "
            f"({cfg.mae.block_size}) on every axis"
        )
    return patch


def build_objective(
    method: Method, cfg: PretrainConfig, plans: dict
) -> tuple[MAEObjective, dict[str, Any]]:
    """The network and method of a recipe, plus what the checkpoint records about them."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    network = build_network(
        plans,
        cfg.model.configuration,
        input_channels=1,
        output_channels=1,
        deep_supervision=False,
        seed=cfg.train.seed,
    )
    with torch.random.fork_rng(devices=[]):  # mask tokens: drawn from the run seed
        torch.manual_seed(cfg.train.seed)
        mae = MaskedAutoencoder(
            network,
            sparse=method == "s3d",
            block_size=cfg.mae.block_size,
            mask_ratio=cfg.mae.mask_ratio,
        )
    meta = {
        "format": CHECKPOINT_FORMAT,
        "medssl_version": __version__,
        "method": method,
        "plans": plans,
        "configuration": cfg.model.configuration,
        "input_channels": 1,
        "network_prefix": MAEObjective.network_prefix,
        "mask": cfg.mae.model_dump(),
    }
    return MAEObjective(mae), meta


def prepare_volumes(
    data: str | Path | Sequence[str | Path],
    cfg: PretrainConfig,
    manifest: Path | None,
    *,
    workers: int | None = None,
) -> tuple[list[CachedVolume], Preprocessing]:
    """Discover and preprocess (or reuse the cache of) the volumes of a recipe."""
    d = cfg.data
    prep = Preprocessing(
        tuple(d.target_spacing) if d.target_spacing else None,  # type: ignore[arg-type]
        d.normalization,
        dict(d.intensity_properties),
        d.cache_dtype,
    )
    refs = discover_volumes(data, d.exclude)
    cache = Path(d.cache_dir) if d.cache_dir else cache_root() / "preprocessed"
    log.info("preprocessing %d volumes into %s", len(refs), cache)
    return preprocess(
        refs,
        cache,
        prep,
        workers=workers or d.preprocess_workers,
        manifest=manifest,
        progress=lambda i, n: log.info("preprocessed %d/%d", i, n),
    )


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def pretrain(
    method: Method,
    data: str | Path | Sequence[str | Path] | None,
    run_dir: str | Path,
    *,
    config: str | Path | dict | PretrainConfig | None = None,
    resume: bool = False,
    val_data: str | Path | Sequence[str | Path] | None = None,
    stop_after: int | None = None,
    verbose: bool = True,
) -> FitResult:
    """Pretrain a U-Net with the dense MAE (``mae``) or Spark3D (``s3d``).

    Args:
        method: ``mae`` or ``s3d``.
        data: Training volumes (folder, list file or paths). May be omitted on resume.
        run_dir: Output folder.
        config: Recipe (YAML path, dict or :class:`PretrainConfig`); on resume the run's own
            ``config.yaml`` is used and a different one given here is an error.
        resume: Continue the run in ``run_dir``.
        val_data: Held-out volumes: their masked reconstruction loss is logged every
            ``train.val_every`` steps (the same fixed patches and masks each time).
        stop_after: Stop at this step (resumable), e.g. before a job's wall time runs out.

    Returns:
        The engine's :class:`medssl.ssl.engine.FitResult`.
    """
    run = Path(run_dir)
    cfg_file = run / "config.yaml"
    state_file = run / "run.json"
    if resume:
        if not (run / CHECKPOINT_LATEST).is_file() or not state_file.is_file():
            raise InputError(
                "no checkpoint to resume from", path=run, hint="start the run without --resume"
            )
        cfg = load_config(cfg_file)
        if config is not None:
            given = config if isinstance(config, PretrainConfig) else load_config(config)
            if given.model_dump() != cfg.model_dump():
                raise InputError(
                    "--config differs from the config this run was started with",
                    path=cfg_file,
                    hint="resume without --config, or start a new run folder",
                )
        state = json.loads(state_file.read_text())
        if state["method"] != method:
            raise InputError(
                f"this run was started with --method {state['method']}, not {method}", path=run
            )
        data = data or state["data"]
        val_data = val_data or state.get("val_data")
    else:
        if (run / CHECKPOINT_LATEST).exists():
            raise InputError(
                "this run folder already holds a checkpoint",
                path=run,
                hint="add --resume to continue it, or choose another -o folder",
            )
        if data is None:
            raise InputError("no training data given", hint="pass --data FOLDER or a list file")
        cfg = config if isinstance(config, PretrainConfig) else load_config(config)

    # fail on bad input before anything is written
    discover_volumes(data, cfg.data.exclude)
    if val_data:
        discover_volumes(val_data, cfg.data.exclude)
    _patch_size(cfg, load_plans(cfg.model.plans))
    info = setup_distributed(cfg.train.device)
    try:
        return _run(method, cfg, data, val_data, run, info, resume, stop_after, verbose)
    finally:
        cleanup_distributed()


def _listify(x: Any) -> Any:
    if x is None or isinstance(x, str | Path):
        return None if x is None else str(x)
    return [str(p) for p in x]


def _run(
    method: Method,
    cfg: PretrainConfig,
    data: Any,
    val_data: Any,
    run: Path,
    info: DistInfo,
    resume: bool,
    stop_after: int | None,
    verbose: bool,
) -> FitResult:
    import torch.distributed as dist

    plans = load_plans(cfg.model.plans)
    patch = _patch_size(cfg, plans)
    t = cfg.train
    if t.batch_size % info.world_size:
        raise InputError(
            f"train.batch_size {t.batch_size} (the global batch) is not divisible by the "
            f"{info.world_size} processes"
        )
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run / "config.yaml").write_text(cfg.to_yaml())
            (run / "run.json").write_text(
                json.dumps(
                    {"method": method, "data": _listify(data), "val_data": _listify(val_data)},
                    indent=1,
                )
            )
        vols, prep = prepare_volumes(data, cfg, run / "volumes.json")
        val = prepare_volumes(val_data, cfg, run / "val_volumes.json")[0] if val_data else None
    if info.distributed:
        dist.barrier()
    if not info.is_main:  # the cache is filled: this only reads it back
        vols, prep = prepare_volumes(data, cfg, None)
        val = None

    objective, meta = build_objective(method, cfg, plans)
    meta.update(patch_size=patch, preprocessing=prep.to_dict(), data_volumes=len(vols))
    dims = len(patch)
    augment = ssl_augmentation(AugmentConfig(**cfg.data.augment.model_dump()), dims)
    dataset = PatchDataset(
        vols, patch, seed=t.seed, foreground_prob=cfg.data.foreground_prob, transform=augment
    )
    per_rank = t.batch_size // info.world_size

    def make_loader(start: int) -> DataLoader:
        sampler = StepBatchSampler(
            per_rank, t.steps, start_step=start, rank=info.rank, world_size=info.world_size
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=cfg.data.num_workers,
            pin_memory=info.device.type == "cuda",
            worker_init_fn=_worker_init,
            prefetch_factor=4 if cfg.data.num_workers else None,
        )

    validate = None
    if val:
        val_set = PatchDataset(val, patch, seed=t.seed + 1, foreground_prob=1.0)
        fixed = [val_set[i] for i in range(cfg.data.val_samples)]

        def validate(model: torch.nn.Module) -> dict[str, float]:
            losses = []
            for i in range(0, len(fixed), max(1, per_rank)):
                chunk = fixed[i : i + max(1, per_rank)]
                batch = {k: torch.stack([c[k] for c in chunk]).to(info.device) for k in chunk[0]}
                losses.append(float(model(batch)["loss"]) * len(chunk))
            return {"loss": sum(losses) / len(fixed)}

    engine = EngineConfig(
        steps=t.steps,
        batch_size=t.batch_size,
        optimizer=t.optimizer,
        lr=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        schedule=t.schedule,
        grad_clip=t.grad_clip,
        amp=t.amp,
        checkpoint_every=t.checkpoint_every,
        log_every=t.log_every,
        val_every=t.val_every,
        seed=t.seed,
    )
    return fit(
        objective,
        make_loader,
        engine,
        run,
        dist_info=info,
        resume=resume,
        metadata=meta,
        validate=validate,
        stop_after=stop_after,
        verbose=verbose,
    )
