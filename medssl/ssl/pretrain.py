"""``medssl pretrain``: volumes in, an nnU-Net-ready pretrained U-Net out.

:func:`pretrain` is the one entry point (``medssl pretrain``, the pipeline's ``pretrain``
stage, the demo and library callers): it takes :class:`medssl.ssl.settings.PretrainSettings`
(the method and the recipe), checks the inputs before anything is written, prepares the
volumes and runs the method's stages (from :mod:`medssl.ssl.registry`) through the engine.
The run folder holds the resolved ``config.yaml``, ``run.json`` (method and volumes),
``volumes.json`` (the cache manifest), the checkpoints, ``metrics.jsonl`` and
``tensorboard/``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
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
from medssl.models.unet import configuration_dict, load_plans
from medssl.ssl import registry
from medssl.ssl.config import PretrainConfig, load_config
from medssl.ssl.distributed import DistInfo, cleanup_distributed, setup_distributed
from medssl.ssl.engine import (
    CHECKPOINT_FINAL,
    CHECKPOINT_LATEST,
    FitResult,
    fit,
    load_checkpoint,
)
from medssl.ssl.mae3d.spec import build_objective
from medssl.ssl.settings import PretrainSettings
from medssl.ssl.stage import Stage, StageContext

__all__ = ["METHODS", "PretrainSettings", "build_objective", "prepare_volumes", "pretrain"]

log = logging.getLogger("medssl.pretrain")

#: The registered methods' names (:func:`medssl.ssl.registry.method_names`).
METHODS = registry.method_names()


def _patch_size(cfg: PretrainConfig, plans: dict, method: str = "mae") -> list[int]:
    """The recipe's patch size, checked against the network and the method."""
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
    check = registry.get(method).check_patch
    if check is not None:
        check(cfg, patch, stage_strides)
    return patch


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
    settings: PretrainSettings | str,
    data: str | Path | Sequence[str | Path] | None,
    run_dir: str | Path,
    *,
    config: str | Path | dict | PretrainConfig | None = None,
    resume: bool = False,
    val_data: str | Path | Sequence[str | Path] | None = None,
    stop_after: int | None = None,
    verbose: bool = True,
) -> FitResult:
    """Pretrain a U-Net with one of the registered methods (:data:`METHODS`).

    Args:
        settings: The method and the recipe (:class:`PretrainSettings`); or a method's name
            with the recipe in ``config`` (``pretrain("mae", data, run, config=cfg)`` is
            ``pretrain(PretrainSettings.from_options("mae", cfg), data, run)``). Methods:
            ``mae`` (dense 3D MAE), ``s3d`` (Spark3D), ``contrastive`` (Chaitanya et al.: a
            global stage of ``train.steps`` steps, then a local stage of
            ``contrastive.local_steps``), ``graphmatch`` (LVM-Med).
        data: Training volumes (folder, list file or paths). May be omitted on resume.
        run_dir: Output folder; ``checkpoint_final.pt`` in it is the result.
        config: Recipe (YAML path, dict or :class:`PretrainConfig`) when ``settings`` is a
            method's name; on resume the run's own ``config.yaml`` is used and a different
            recipe given is an error.
        resume: Continue the run in ``run_dir``.
        val_data: Held-out volumes whose loss is logged every ``train.val_every`` steps (the
            same fixed samples each time).
        stop_after: Stop at this step of the current stage (resumable), e.g. before a job's
            wall time runs out.

    Returns:
        The engine's :class:`medssl.ssl.engine.FitResult` of the last stage run.

    Raises:
        InputError: Unknown method, invalid recipe, bad or missing volumes, a run folder that
            holds a run (without ``resume``) or none (with it), a resume that changes the
            method, recipe or volumes. Nothing is written then.
        TypeError: ``config`` given with a :class:`PretrainSettings`.
    """
    if isinstance(settings, str):
        settings = PretrainSettings.from_options(settings, config)
    elif config is not None:
        raise TypeError("pass the recipe in PretrainSettings, not also as config")
    run = Path(run_dir)
    cfg, data, val_data = _resolve(settings, data, val_data, run, resume)
    method = settings.method
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


def _resolve(
    settings: PretrainSettings,
    data: Any,
    val_data: Any,
    run: Path,
    resume: bool,
) -> tuple[PretrainConfig, Any, Any]:
    """The recipe and volumes of the run: a new run's own, or those a resumed run recorded
    (``config.yaml``, ``run.json``), which what is given must not contradict."""
    method = settings.method
    cfg_file = run / "config.yaml"
    state_file = run / "run.json"
    if not resume:
        if state_file.exists() or (run / CHECKPOINT_LATEST).exists():
            raise InputError(
                "this run folder already holds a run (and maybe checkpoints)",
                path=run,
                hint="add --resume to continue it, or choose another -o folder",
            )
        if data is None:
            raise InputError("no training data given", hint="pass --data FOLDER or a list file")
        return settings.resolved_recipe(), data, val_data
    if not state_file.is_file() or not cfg_file.is_file():
        raise InputError("no run to resume here", path=run, hint="start the run without --resume")
    cfg = load_config(cfg_file)
    check_resume = registry.get(method).check_resume
    if check_resume is not None:
        check_resume(yaml.safe_load(cfg_file.read_text()) or {})
    if settings.recipe is not None and settings.recipe.model_dump() != cfg.model_dump():
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
                f"--{key.replace('_data', '')} differs from the volumes this run was started with",
                path=run,
                hint="resume without --data/--val: the run keeps its own volume list",
            )
    return cfg, state["data"], state.get("val_data")


def _listify(x: Any) -> Any:
    """Absolute paths (a resumed run may start from another working directory)."""
    if x is None:
        return None
    if isinstance(x, str | Path):
        return str(Path(x).resolve())
    return [str(Path(p).resolve()) for p in x]


def _run(
    method: str,
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

    context = StageContext(method, cfg, plans, patch, vols, prep, run)
    stages = registry.get(method).build(context)
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
            # a progress line, like the engine's step lines (it is no warning)
            line = f"stage {i + 1}/{len(stages)}: {stage.name} ({stage.steps} steps)"
            print(line, file=sys.stderr)
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


def _load_network(stage: Stage, checkpoint: Path) -> None:
    """Give ``stage``'s network the weights of a finished stage (they share the network)."""
    model = load_checkpoint(checkpoint)["model"]
    prefix = stage.meta.network_prefix
    state = {k[len(prefix) :]: v for k, v in model.items() if k.startswith(prefix)}
    stage.objective.network.load_state_dict(state)  # type: ignore[union-attr]


def _fit_stage(
    stage: Stage,
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
        cfg.train.for_stage(stage.steps),
        stage.folder,
        dist_info=info,
        resume=resume,
        metadata=stage.meta.to_dict(),
        validate=validate,
        stop_after=stop_after,
        verbose=verbose,
    )
