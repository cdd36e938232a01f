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
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from medssl.data.fetch import cache_root
from medssl.data.patches import PatchDataset, StepBatchSampler
from medssl.data.views import ViewDataset
from medssl.data.volumes import (
    CachedVolume,
    Preprocessing,
    VolumeRef,
    discover_volumes,
    load_manifest,
    preprocess,
    write_manifest,
)
from medssl.errors import InputError
from medssl.io import atomic_file, check_not_input, write_json, write_text
from medssl.models.checkpoint_meta import PretrainMeta
from medssl.models.unet import build_network, configuration_dict, load_plans
from medssl.ssl.config import PretrainConfig, load_config
from medssl.ssl.distributed import DistInfo, cleanup_distributed, setup_distributed
from medssl.ssl.engine import (
    CHECKPOINT_FINAL,
    CHECKPOINT_LATEST,
    EngineConfig,
    FitResult,
    fit,
    load_checkpoint,
)
from medssl.ssl.mae3d import MAEObjective, MaskedAutoencoder
from medssl.transforms.ssl import AugmentConfig, ssl_augmentation

__all__ = ["METHODS", "build_objective", "prepare_volumes", "pretrain"]

log = logging.getLogger("medssl.pretrain")

METHODS = ("mae", "s3d", "contrastive", "graphmatch")
Method = Literal["mae", "s3d", "contrastive", "graphmatch"]


def _patch_size(cfg: PretrainConfig, plans: dict, method: str = "mae") -> list[int]:
    conf = configuration_dict(plans, cfg.model.configuration)
    patch = list(cfg.model.patch_size or conf["patch_size"])
    if len(patch) != len(conf["patch_size"]):
        raise InputError(
            f"model.patch_size {patch} has {len(patch)} axes but configuration "
            f"{cfg.model.configuration!r} is {len(conf['patch_size'])}D"
        )
    cumulative = [1] * len(patch)  # each stage's stride from the input
    stage_strides = []
    for st in conf["architecture"]["arch_kwargs"]["strides"]:
        st = [st] * len(patch) if isinstance(st, int) else st
        cumulative = [c * int(x) for c, x in zip(cumulative, st, strict=True)]
        stage_strides.append(cumulative)
    if any(p % t for p, t in zip(patch, cumulative, strict=True)):
        raise InputError(
            f"model.patch_size {patch} must be divisible by the network's total stride {cumulative}"
        )
    b = cfg.mae.block_size
    if method in ("mae", "s3d"):
        if any(p % b for p in patch):
            raise InputError(
                f"model.patch_size {patch} must be a multiple of mae.block_size ({b}) on every axis"
            )
        # each stage's cells must tile blocks exactly (or blocks tile cells) for S3D's masks
        for stride in stage_strides:
            if any(b % c and c % b for c in stride):
                raise InputError(
                    f"mae.block_size {b} does not fit the network's stage strides "
                    f"{stride}: use a block size that divides or is divided by every "
                    "stride (e.g. a power of two)"
                )
    return patch


def _base_meta(method: str, cfg: PretrainConfig, plans: dict) -> PretrainMeta:
    return PretrainMeta(
        method=method,
        plans=plans,
        configuration=cfg.model.configuration,
        input_channels=1,
        network_prefix="network.",
    )


def _network(cfg: PretrainConfig, plans: dict, output_channels: int = 1) -> Any:
    return build_network(
        plans,
        cfg.model.configuration,
        input_channels=1,
        output_channels=output_channels,
        deep_supervision=False,
        seed=cfg.train.seed,
    )


def build_objective(
    method: Method, cfg: PretrainConfig, plans: dict
) -> tuple[MAEObjective, PretrainMeta]:
    """The MAE network and method of a recipe, plus what the checkpoint records about them."""
    if method not in ("mae", "s3d"):
        raise InputError(f"build_objective builds mae or s3d, not {method!r}")
    network = _network(cfg, plans)
    with torch.random.fork_rng(devices=[]):  # mask tokens: drawn from the run seed
        torch.manual_seed(cfg.train.seed)
        mae = MaskedAutoencoder(
            network,
            sparse=method == "s3d",
            block_size=cfg.mae.block_size,
            mask_ratio=cfg.mae.mask_ratio,
        )
    meta = replace(
        _base_meta(method, cfg, plans),
        network_prefix=MAEObjective.network_prefix,
        settings={"mask": cfg.mae.model_dump()},
    )
    return MAEObjective(mae), meta


def prepare_volumes(
    data: str | Path | Sequence[str | Path],
    cfg: PretrainConfig,
    manifest: Path | None,
    *,
    workers: int | None = None,
    refs: Sequence[VolumeRef] | None = None,
) -> tuple[list[CachedVolume], Preprocessing]:
    """Discover and preprocess (or reuse the cache of) the volumes of a recipe (``refs``:
    the volumes of ``data`` when already discovered)."""
    d = cfg.data
    prep = Preprocessing(
        tuple(d.target_spacing) if d.target_spacing else None,  # type: ignore[arg-type]
        d.normalization,
        dict(d.intensity_properties),
        d.cache_dtype,
    )
    if refs is None:
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
    """Pretrain a U-Net with one of :data:`METHODS`.

    Args:
        method: ``mae`` (dense 3D MAE), ``s3d`` (Spark3D), ``contrastive`` (Chaitanya et al.:
            a global stage of ``train.steps`` steps, then a local stage of
            ``contrastive.local_steps``) or ``graphmatch`` (LVM-Med).
        data: Training volumes (folder, list file or paths). May be omitted on resume.
        run_dir: Output folder; ``checkpoint_final.pt`` in it is the result.
        config: Recipe (YAML path, dict or :class:`PretrainConfig`); on resume the run's own
            ``config.yaml`` is used and a different one given here is an error.
        resume: Continue the run in ``run_dir``.
        val_data: Held-out volumes whose loss is logged every ``train.val_every`` steps (the
            same fixed samples each time).
        stop_after: Stop at this step of the current stage (resumable), e.g. before a job's
            wall time runs out.

    Returns:
        The engine's :class:`medssl.ssl.engine.FitResult` of the last stage run.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    run = Path(run_dir)
    cfg_file = run / "config.yaml"
    state_file = run / "run.json"
    if resume:
        if not state_file.is_file() or not cfg_file.is_file():
            raise InputError(
                "no run to resume here", path=run, hint="start the run without --resume"
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
        for given, key in ((data, "data"), (val_data, "val_data")):
            if given is not None and _listify(given) != state.get(key):
                raise InputError(
                    f"--{key.replace('_data', '')} differs from the volumes this run was "
                    "started with",
                    path=run,
                    hint="resume without --data/--val: the run keeps its own volume list",
                )
        data = state["data"]
        val_data = state.get("val_data")
    else:
        if state_file.exists() or (run / CHECKPOINT_LATEST).exists():
            raise InputError(
                "this run folder already holds a run (and maybe checkpoints)",
                path=run,
                hint="add --resume to continue it, or choose another -o folder",
            )
        if data is None:
            raise InputError("no training data given", hint="pass --data FOLDER or a list file")
        cfg = config if isinstance(config, PretrainConfig) else load_config(config)

    # fail on bad input before anything is written; never write inside the inputs
    for given in (data, val_data):
        if given is not None:
            check_not_input(run, [given] if isinstance(given, str | Path) else list(given))
    refs = discover_volumes(data, cfg.data.exclude)
    val_refs = discover_volumes(val_data, cfg.data.exclude) if val_data else None
    _patch_size(cfg, load_plans(cfg.model.plans), method)
    info = setup_distributed(cfg.train.device)
    try:
        return _run(
            method, cfg, (data, refs), (val_data, val_refs), run, info, resume, stop_after, verbose
        )
    finally:
        cleanup_distributed()


def _listify(x: Any) -> Any:
    """Absolute paths (a resumed run may start from another working directory)."""
    if x is None:
        return None
    if isinstance(x, str | Path):
        return str(Path(x).resolve())
    return [str(Path(p).resolve()) for p in x]


def _engine_config(cfg: PretrainConfig, steps: int) -> EngineConfig:
    t = cfg.train
    return EngineConfig(
        steps=steps,
        batch_size=t.batch_size,
        optimizer=t.optimizer,
        lr=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=min(t.warmup_steps, max(0, steps - 1)),
        schedule=t.schedule,
        grad_clip=t.grad_clip,
        amp=t.amp,
        checkpoint_every=t.checkpoint_every,
        log_every=t.log_every,
        val_every=t.val_every,
        seed=t.seed,
    )


def _partition_strategies(cfg: PretrainConfig, vols: Sequence[CachedVolume]) -> tuple[str, str]:
    """Partition-aware strategies need roughly aligned volumes of one kind; fall back to
    G^R/L^R when the volumes' slice axes point different ways (the last letter of the
    orientation code: partition ``s`` would be different anatomy) or the modalities differ."""
    c = cfg.contrastive
    kinds = {(v.orientation[-1] if v.orientation else None, v.modality) for v in vols}
    mixed = len(kinds) > 1 or any(None in k for k in kinds)
    if c.fallback and mixed and (c.global_strategy != "GR" or c.local_strategy != "LR"):
        log.warning(
            "the volumes mix orientations/modalities %s (or lack them): partitions do not "
            "correspond, so the global/local strategies fall back to GR/LR",
            sorted(str(k) for k in kinds),
        )
        return "GR", "LR"
    return c.global_strategy, c.local_strategy


class _Stage:
    """One engine run of a method: its objective, dataset, steps and folder."""

    def __init__(
        self,
        name: str,
        folder: Path,
        objective: torch.nn.Module,
        dataset: Any,
        steps: int,
        meta: PretrainMeta,
    ) -> None:
        self.name, self.folder, self.objective = name, folder, objective
        self.dataset, self.steps, self.meta = dataset, steps, meta


def _view_transform(cfg: PretrainConfig, dims: int, aligned: bool) -> Any:
    v = cfg.views
    return ssl_augmentation(
        AugmentConfig(
            flip_prob=0.0 if aligned else v.flip_prob,
            affine_prob=0.0 if aligned else v.affine_prob,
            intensity_prob=v.intensity_prob,
            gamma_prob=v.gamma_prob,
            noise_prob=v.noise_prob,
        ),
        dims,
    )


def _stages(
    method: Method,
    cfg: PretrainConfig,
    plans: dict,
    patch: list[int],
    vols: list[CachedVolume],
    prep: Preprocessing,
    run: Path,
) -> list[_Stage]:
    t = cfg.train
    dims = len(patch)
    recorded = {"patch_size": tuple(patch), "preprocessing": prep.to_dict()}
    recorded["data_volumes"] = len(vols)
    base = replace(_base_meta(method, cfg, plans), **recorded)
    if method in ("mae", "s3d"):
        objective, meta = build_objective(method, cfg, plans)
        meta = replace(meta, **recorded)
        augment = ssl_augmentation(AugmentConfig(**cfg.data.augment.model_dump()), dims)
        dataset = PatchDataset(
            vols, patch, seed=t.seed, foreground_prob=cfg.data.foreground_prob, transform=augment
        )
        return [_Stage(method, run, objective, dataset, t.steps, meta)]
    if method == "contrastive":
        from medssl.ssl.contrastive.method import (
            GlobalContrastiveObjective,
            LocalContrastiveObjective,
        )

        c = cfg.contrastive
        if t.batch_size % c.partitions:
            raise InputError(
                f"train.batch_size {t.batch_size} must be a multiple of contrastive.partitions "
                f"({c.partitions}): a batch takes one image per partition from each volume"
            )
        g_strategy, l_strategy = _partition_strategies(cfg, vols)
        network = _network(cfg, plans)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed)
            g = GlobalContrastiveObjective(
                network,
                strategy=g_strategy,
                temperature=c.temperature,
                hidden=c.head_hidden,
                out=c.head_out,
            )
        g_data = ViewDataset(
            vols,
            patch,
            partitions=c.partitions,
            seed=t.seed,
            transform=_view_transform(cfg, dims, aligned=False),
            jitter=cfg.views.jitter,
        )
        g_meta = replace(
            base,
            stage="global",
            strategy=g_strategy,
            settings={"contrastive": c.model_dump()},
            pretrained_keys=tuple(g.trained_keys()),
        )
        stages = [_Stage("global", run / "stage1_global", g, g_data, t.steps, g_meta)]
        if c.local_steps > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(t.seed + 1)
                loc = LocalContrastiveObjective(
                    network,
                    strategy=l_strategy,
                    temperature=c.temperature,
                    blocks=c.local_blocks,
                    hidden=c.local_head,
                    out=c.local_head,
                    region_size=c.region_size,
                )
            l_data = ViewDataset(
                vols,
                patch,
                partitions=c.partitions,
                seed=t.seed + 1,
                transform=_view_transform(cfg, dims, aligned=True),
                jitter=cfg.views.jitter,
                aligned=True,
            )
            l_meta = replace(
                g_meta,
                stage="local",
                strategy=(g_strategy, l_strategy),
                pretrained_keys=tuple(loc.trained_keys()),
            )
            stages.append(_Stage("local", run / "stage2_local", loc, l_data, c.local_steps, l_meta))
        return stages
    from medssl.ssl.graphmatch.method import GraphMatchObjective

    gm = cfg.graphmatch
    network = _network(cfg, plans)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        objective = GraphMatchObjective(network, **gm.model_dump())
    data = ViewDataset(
        vols,
        patch,
        partitions=1,
        seed=t.seed,
        transform=_view_transform(cfg, dims, aligned=True),
        jitter=cfg.views.jitter,
    )
    meta = replace(
        base,
        settings={"graphmatch": gm.model_dump()},
        pretrained_keys=tuple(objective.trained_keys()),
    )
    return [_Stage("graphmatch", run, objective, data, t.steps, meta)]


def _run(
    method: Method,
    cfg: PretrainConfig,
    volumes: tuple[Any, list[VolumeRef]],
    val_volumes: tuple[Any, list[VolumeRef] | None],
    run: Path,
    info: DistInfo,
    resume: bool,
    stop_after: int | None,
    verbose: bool,
) -> FitResult:
    import torch.distributed as dist

    (data, refs), (val_data, val_refs) = volumes, val_volumes
    plans = load_plans(cfg.model.plans)
    patch = _patch_size(cfg, plans, method)
    t = cfg.train
    if t.batch_size % info.world_size:
        raise InputError(
            f"train.batch_size {t.batch_size} (the global batch) is not divisible by the "
            f"{info.world_size} processes"
        )
    manifest, val_manifest = run / "volumes.json", run / "val_volumes.json"
    val: list[CachedVolume] | None = None
    if info.is_main:
        if resume and manifest.is_file():  # the run's own volumes and settings, as recorded
            vols, prep = _recorded(manifest)
            val = _recorded(val_manifest)[0] if val_manifest.is_file() else None
        else:
            vols, prep = prepare_volumes(data, cfg, None, refs=refs)
            val = prepare_volumes(val_data, cfg, None, refs=val_refs)[0] if val_refs else None
            # written only once the volumes are prepared: a failure leaves nothing behind
            run.mkdir(parents=True, exist_ok=True)
            write_manifest(manifest, vols, prep)
            if val:
                write_manifest(val_manifest, val, prep)
            if not resume:
                write_text(run / "config.yaml", cfg.to_yaml())
                state = {"method": method, "data": _listify(data), "val_data": _listify(val_data)}
                write_json(run / "run.json", state)
    if info.distributed:
        dist.barrier()
    if not info.is_main:  # rank 0 prepared the cache and recorded it
        vols, prep = load_manifest(manifest)

    stages = _stages(method, cfg, plans, patch, vols, prep, run)
    per_rank = t.batch_size // info.world_size
    result: FitResult | None = None
    for i, stage in enumerate(stages):
        final = stage.folder / CHECKPOINT_FINAL
        if final.is_file():  # done in an earlier run: its weights feed the next stage
            result = FitResult(stage.steps, final, True, float("nan"))
            _load_network(stage, final)
            continue
        stage_resume = (stage.folder / CHECKPOINT_LATEST).is_file()
        if stage_resume and not resume:
            raise InputError("the run folder holds checkpoints", path=stage.folder)
        if verbose and info.is_main and len(stages) > 1:
            log.warning("stage %d/%d: %s (%d steps)", i + 1, len(stages), stage.name, stage.steps)
        result = _fit_stage(stage, cfg, info, per_rank, val, stage_resume, stop_after, verbose)
        if not result.finished:
            return result
        last = i == len(stages) - 1
        if last and stage.folder != run and info.is_main:  # the method's result at the top
            _copy(result.checkpoint, run / CHECKPOINT_FINAL)
            _copy(result.checkpoint, run / CHECKPOINT_LATEST)
    assert result is not None
    if stages[-1].folder != run:
        result = FitResult(result.step, run / CHECKPOINT_FINAL, True, result.last_loss)
    return result


def _recorded(manifest: Path) -> tuple[list[CachedVolume], Preprocessing]:
    vols, prep = load_manifest(manifest)
    missing = [v.image for v in vols if not Path(v.image).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} preprocessed volume(s) of this run are gone from the cache "
            f"(e.g. {missing[0]})",
            path=manifest,
            hint="resuming needs the run's own preprocessed volumes; start a new run",
        )
    return vols, prep


def _copy(src: Path, dst: Path) -> None:
    import shutil

    with atomic_file(dst) as tmp:
        shutil.copyfile(src, tmp)


def _load_network(stage: _Stage, checkpoint: Path) -> None:
    """Give ``stage``'s network the weights of a finished stage (they share the network)."""
    model = load_checkpoint(checkpoint)["model"]
    prefix = stage.meta.network_prefix
    state = {k[len(prefix) :]: v for k, v in model.items() if k.startswith(prefix)}
    stage.objective.network.load_state_dict(state)  # type: ignore[union-attr]


def _fit_stage(
    stage: _Stage,
    cfg: PretrainConfig,
    info: DistInfo,
    per_rank: int,
    val: list[CachedVolume] | None,
    resume: bool,
    stop_after: int | None,
    verbose: bool,
) -> FitResult:
    t = cfg.train
    dataset = stage.dataset
    set_trainable = getattr(stage.objective, "set_trainable", None)
    if set_trainable is not None:  # stages share the network: each sets what it trains
        set_trainable()

    def make_loader(start: int) -> DataLoader:
        sampler = StepBatchSampler(
            per_rank, stage.steps, start_step=start, rank=info.rank, world_size=info.world_size
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
        if isinstance(dataset, PatchDataset):
            val_set: Any = PatchDataset(
                val, dataset.patch_size, seed=t.seed + 1, foreground_prob=1.0
            )
        else:
            val_set = ViewDataset(
                val,
                dataset.patch_size,
                partitions=dataset.partitions,
                seed=t.seed + 1,
                transform=dataset.transform,
                jitter=dataset.jitter,
                aligned=dataset.aligned,
            )
        # view batches keep the training layout (whole partition groups) per chunk
        chunk_size = max(1, per_rank)
        n_val = max(cfg.data.val_samples, chunk_size)
        fixed = [val_set[i] for i in range(n_val - n_val % chunk_size)]

        def validate(model: torch.nn.Module) -> dict[str, float]:
            total = 0.0
            for i in range(0, len(fixed), chunk_size):
                chunk = fixed[i : i + chunk_size]
                batch = {k: torch.stack([c[k] for c in chunk]).to(info.device) for k in chunk[0]}
                total += float(model(batch)["loss"]) * len(chunk)
            return {"loss": total / len(fixed)}

    return fit(
        stage.objective,
        make_loader,
        _engine_config(cfg, stage.steps),
        stage.folder,
        dist_info=info,
        resume=resume,
        metadata=stage.meta.to_dict(),
        validate=validate,
        stop_after=stop_after,
        verbose=verbose,
    )
