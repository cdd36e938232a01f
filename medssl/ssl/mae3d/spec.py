"""The MAE methods' registration: ``mae`` (dense 3D MAE) and ``s3d`` (Spark3D, sparse
encoder), their recipe section ``mae`` and their stage builder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from medssl.errors import InputError
from medssl.ssl.registry import MethodSpec, Section, register

if TYPE_CHECKING:
    from medssl.models.checkpoint_meta import PretrainMeta
    from medssl.ssl.config import PretrainConfig
    from medssl.ssl.stage import Stage, StageContext

__all__ = ["MaskSection", "build_objective"]


class MaskSection(Section):
    """MAE masking (Revisiting MAE: 16³ blocks, 75 %). ``mask_ratio: [low, high]`` draws each
    sample's ratio from ``U(low, high)`` (S3D-L: ``[0.6, 0.9]``); ``densify: true`` adds
    SparK's densify step to S3D (see :class:`medssl.ssl.mae3d.model.MaskedAutoencoder`)."""

    block_size: int = Field(16, ge=1)
    mask_ratio: float | tuple[float, float] = 0.75
    densify: bool = False

    @field_validator("mask_ratio")
    @classmethod
    def _ratio(cls, v: float | tuple[float, float]) -> float | tuple[float, float]:
        low, high = (v, v) if isinstance(v, int | float) else v
        if not 0 <= low <= high < 1:
            raise ValueError(
                f"must be a ratio in [0, 1) or [low, high] with 0 <= low <= high < 1, got {v}"
            )
        return v


def check_patch(cfg: PretrainConfig, patch: list[int], stage_strides: list[list[int]]) -> None:
    """The patch must tile into mask blocks, and each stage's cells must tile blocks exactly
    (or blocks tile cells) for S3D's masks."""
    b = cfg.mae.block_size
    if any(p % b for p in patch):
        raise InputError(
            f"model.patch_size {patch} must be a multiple of mae.block_size ({b}) on every axis"
        )
    for stride in stage_strides:
        if any(b % c and c % b for c in stride):
            raise InputError(
                f"mae.block_size {b} does not fit the network's stage strides "
                f"{stride}: use a block size that divides or is divided by every "
                "stride (e.g. a power of two)"
            )


def build_objective(method: str, cfg: PretrainConfig, plans: dict) -> tuple[Any, PretrainMeta]:
    """The MAE network and method of a recipe (an ``MAEObjective``), plus what the checkpoint
    records about them."""
    from dataclasses import replace

    import torch

    from medssl.ssl.mae3d.model import MAEObjective, MaskedAutoencoder
    from medssl.ssl.stage import base_meta, network

    if method not in ("mae", "s3d"):
        raise InputError(f"build_objective builds mae or s3d, not {method!r}")
    if cfg.mae.densify and method != "s3d":
        raise InputError(
            "mae.densify is S3D's densify step; the dense MAE has none",
            hint="use --method s3d, or set mae.densify: false",
        )
    net = network(cfg, plans)
    with torch.random.fork_rng(devices=[]):  # mask tokens: drawn from the run seed
        torch.manual_seed(cfg.train.seed)
        mae = MaskedAutoencoder(
            net,
            sparse=method == "s3d",
            block_size=cfg.mae.block_size,
            mask_ratio=cfg.mae.mask_ratio,
            densify=cfg.mae.densify,
        )
    meta = replace(
        base_meta(method, cfg, plans),
        network_prefix=MAEObjective.network_prefix,
        settings={"mask": cfg.mae.model_dump()},
    )
    return MAEObjective(mae), meta


def build(ctx: StageContext) -> list[Stage]:
    """One stage: the masked autoencoder on random patches (``data.augment``)."""
    from dataclasses import replace

    from medssl.data.patches import PatchDataset
    from medssl.ssl.stage import Stage
    from medssl.transforms.ssl import ssl_augmentation

    cfg = ctx.cfg
    objective, meta = build_objective(ctx.method, cfg, ctx.plans)
    base = ctx.base_meta()
    meta = replace(
        meta,
        patch_size=base.patch_size,
        preprocessing=base.preprocessing,
        data_volumes=base.data_volumes,
    )
    augment = ssl_augmentation(cfg.data.augment.augment_config(), ctx.dims)
    dataset = PatchDataset(
        ctx.volumes,
        ctx.patch,
        seed=cfg.train.seed,
        foreground_prob=cfg.data.foreground_prob,
        transform=augment,
    )
    return [Stage(ctx.method, ctx.run, objective, dataset, cfg.train.steps, meta)]


register(
    MethodSpec(
        name="mae",
        summary="dense 3D MAE",
        order=0,
        build=build,
        section="mae",
        settings=MaskSection,
        check_patch=check_patch,
    )
)
register(
    MethodSpec(
        name="s3d",
        summary="Spark3D, sparse encoder",
        order=1,
        build=build,
        section="mae",
        settings=MaskSection,
        check_patch=check_patch,
    )
)
