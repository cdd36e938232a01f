"""The ``contrastive`` method's registration (Chaitanya et al., NeurIPS 2020): its recipe
section ``contrastive`` and its two stages (global, then local)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from medssl.errors import InputError
from medssl.ssl.registry import MethodSpec, Section, register

if TYPE_CHECKING:
    from medssl.data.volumes import CachedVolume
    from medssl.ssl.config import PretrainConfig
    from medssl.ssl.stage import Stage, StageContext

__all__ = ["ContrastiveSection", "partition_strategies"]

log = logging.getLogger("medssl.pretrain")


class ContrastiveSection(Section):
    """Chaitanya et al. (NeurIPS 2020): stage 1 global (``train.steps``), stage 2 local."""

    global_strategy: Literal["GR", "GD-", "GD"] = "GD"
    local_strategy: Literal["LR", "LD"] = "LD"
    temperature: float = Field(0.1, gt=0)
    partitions: int = Field(4, ge=1)
    local_steps: int = Field(200, ge=0)
    local_blocks: int | None = Field(None, ge=1)
    region_size: int = Field(3, ge=1)
    head_hidden: int = Field(1024, ge=1)
    head_out: int = Field(128, ge=1)
    local_head: int = Field(128, ge=1)
    fallback: bool = True


def partition_strategies(cfg: PretrainConfig, vols: Sequence[CachedVolume]) -> tuple[str, str]:
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


def build(ctx: StageContext) -> list[Stage]:
    """The global stage (``train.steps``, in the run's ``stage1_global``) and, with
    ``contrastive.local_steps``, the local stage (``stage2_local``) on the same network."""
    from dataclasses import replace

    import torch

    from medssl.data.views import ViewDataset
    from medssl.ssl.contrastive.method import (
        GlobalContrastiveObjective,
        LocalContrastiveObjective,
    )
    from medssl.ssl.stage import Stage

    cfg, t, c = ctx.cfg, ctx.cfg.train, ctx.cfg.contrastive
    if t.batch_size % c.partitions:
        raise InputError(
            f"train.batch_size {t.batch_size} must be a multiple of contrastive.partitions "
            f"({c.partitions}): a batch takes one image per partition from each volume"
        )
    g_strategy, l_strategy = partition_strategies(cfg, ctx.volumes)
    network = ctx.network()
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
        ctx.volumes,
        ctx.patch,
        partitions=c.partitions,
        seed=t.seed,
        transform=ctx.view_transform(aligned=False),
        jitter=cfg.views.jitter,
    )
    g_meta = replace(
        ctx.base_meta(),
        stage="global",
        strategy=g_strategy,
        settings={"contrastive": c.model_dump()},
        pretrained_keys=tuple(g.trained_keys()),
    )
    stages = [Stage("global", ctx.run / "stage1_global", g, g_data, t.steps, g_meta)]
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
            ctx.volumes,
            ctx.patch,
            partitions=c.partitions,
            seed=t.seed + 1,
            transform=ctx.view_transform(aligned=True),
            jitter=cfg.views.jitter,
            aligned=True,
        )
        l_meta = replace(
            g_meta,
            stage="local",
            strategy=(g_strategy, l_strategy),
            pretrained_keys=tuple(loc.trained_keys()),
        )
        stages.append(Stage("local", ctx.run / "stage2_local", loc, l_data, c.local_steps, l_meta))
    return stages


register(
    MethodSpec(
        name="contrastive",
        summary="global + local, Chaitanya et al.",
        order=2,
        build=build,
        section="contrastive",
        settings=ContrastiveSection,
    )
)
