"""The ``graphmatch`` method's registration (LVM-Med, NeurIPS 2023): its recipe section
``graphmatch`` and its stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from medssl.errors import InputError
from medssl.ssl.registry import MethodSpec, Section, register

if TYPE_CHECKING:
    from medssl.ssl.stage import Stage, StageContext

__all__ = ["GraphMatchSection"]


class GraphMatchSection(Section):
    """LVM-Med (NeurIPS 2023): second-order graph matching of the two views of a batch.

    ``k`` neighbours per node, ``alpha`` the global cosine's weight in the vertex affinity,
    ``lam`` I-MLE's λ (for the Hamming loss summed over a graph's nodes, as the paper's
    70-100), ``graph_size`` nodes per graph (the global batch is cut into graphs of about
    this size, 16 in LVM-Med), ``edge_affinity`` ``cosine`` (the paper's) or ``gaussian``
    (bandwidth ``edge_sigma``), ``width`` the GCN's, ``head_*`` the projection head's."""

    k: int = Field(5, ge=1)
    alpha: float = Field(0.8, ge=0, le=1)
    lam: float = Field(80.0, gt=0)
    width: int = Field(128, ge=1)
    head_hidden: int = Field(1024, ge=1)
    head_out: int = Field(128, ge=1)
    edge_sigma: float = Field(1.0, gt=0)
    graph_size: int = Field(16, ge=2)
    edge_affinity: Literal["cosine", "gaussian"] = "cosine"


def build(ctx: StageContext) -> list[Stage]:
    """One stage: matching the graphs of two aligned views of each patch."""
    from dataclasses import replace

    import torch

    from medssl.data.views import ViewDataset
    from medssl.ssl.graphmatch.method import GraphMatchObjective
    from medssl.ssl.stage import Stage

    cfg, t, gm = ctx.cfg, ctx.cfg.train, ctx.cfg.graphmatch
    network = ctx.network()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        objective = GraphMatchObjective(network, **gm.model_dump())
    data = ViewDataset(
        ctx.volumes,
        ctx.patch,
        partitions=1,
        seed=t.seed,
        transform=ctx.view_transform(aligned=True),
        jitter=cfg.views.jitter,
    )
    meta = replace(
        ctx.base_meta(),
        settings={"graphmatch": gm.model_dump()},
        pretrained_keys=tuple(objective.trained_keys()),
    )
    return [Stage("graphmatch", ctx.run, objective, data, t.steps, meta)]


def check_resume(saved: dict) -> None:
    """A run started before graphs of ``graph_size`` nodes (its saved recipe lacks the key)
    trained another loss: one graph per batch, a Gaussian edge affinity and I-MLE's lambda
    acting as lambda/n; today's loss would take over mid-run."""
    if "graph_size" not in (saved.get("graphmatch") or {}):
        raise InputError(
            "this graph-matching run was started by an earlier medssl whose loss differs (one "
            "graph per batch, Gaussian edge affinity, lambda acting as lambda/n): it cannot be "
            "continued with today's loss",
            hint="start a new run folder, or finish this one with the medssl that started it",
        )


register(
    MethodSpec(
        name="graphmatch",
        summary="LVM-Med",
        order=3,
        build=build,
        section="graphmatch",
        settings=GraphMatchSection,
        check_resume=check_resume,
    )
)
