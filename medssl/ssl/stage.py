"""What a method's builder gets (:class:`StageContext`) and gives back (:class:`Stage`).

A :class:`medssl.ssl.registry.MethodSpec`'s ``build(ctx)`` turns a recipe and the prepared
volumes into one or more stages: engine runs (:func:`medssl.ssl.engine.fit`) of an objective
on a dataset for a number of steps, in a folder, with the checkpoint metadata
(:class:`medssl.models.checkpoint_meta.PretrainMeta`) that the stage's checkpoints carry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from medssl.data.volumes import CachedVolume, Preprocessing
from medssl.models.checkpoint_meta import PretrainMeta
from medssl.models.unet import build_network
from medssl.ssl.config import PretrainConfig
from medssl.transforms.ssl import ssl_augmentation

__all__ = ["Stage", "StageContext", "base_meta", "network"]


@dataclass
class Stage:
    """One engine run of a method.

    Attributes:
        name: ``mae``, ``global``, ``local``, ... (the progress line's stage name).
        folder: Its run folder (the run's own, or a subfolder per stage).
        objective: ``forward(batch) -> {"loss": ...}``; ``network_prefix`` names where the
            U-Net's weights are in its state dict; ``set_trainable()`` (optional) chooses the
            trained parameters before the stage runs (stages may share the network).
        dataset: Map-style dataset of the stage's samples (``PatchDataset`` or ``ViewDataset``).
        steps: Optimiser steps of the stage.
        meta: What its checkpoints record.
    """

    name: str
    folder: Path
    objective: torch.nn.Module
    dataset: Any
    steps: int
    meta: PretrainMeta


@dataclass(frozen=True)
class StageContext:
    """What a builder needs: the recipe, the network's plans, the patch size (``(z, y, x)``
    or ``(y, x)``), the prepared volumes and their preprocessing, the run folder."""

    method: str
    cfg: PretrainConfig
    plans: dict
    patch: list[int]
    volumes: list[CachedVolume]
    preprocessing: Preprocessing
    run: Path

    @property
    def dims(self) -> int:
        """2 or 3: the patch's spatial axes."""
        return len(self.patch)

    def base_meta(self) -> PretrainMeta:
        """The metadata every stage of the run records (method, plans, patch, data)."""
        return replace(
            base_meta(self.method, self.cfg, self.plans),
            patch_size=tuple(self.patch),
            preprocessing=self.preprocessing.to_dict(),
            data_volumes=len(self.volumes),
        )

    def network(self, output_channels: int = 1) -> Any:
        """A fresh U-Net of the recipe, initialised from ``train.seed``."""
        return network(self.cfg, self.plans, output_channels)

    def view_transform(self, aligned: bool) -> Any:
        """The ``views`` augmentation; ``aligned`` views are not flipped or warped (their
        voxels must correspond)."""
        return ssl_augmentation(self.cfg.views.augment_config(aligned), self.dims)


def base_meta(method: str, cfg: PretrainConfig, plans: dict) -> PretrainMeta:
    """The checkpoint metadata of a method's network before any stage adds to it."""
    return PretrainMeta(
        method=method,
        plans=plans,
        configuration=cfg.model.configuration,
        input_channels=1,
        network_prefix="network.",
    )


def network(cfg: PretrainConfig, plans: dict, output_channels: int = 1) -> Any:
    """The recipe's U-Net (no deep supervision), initialised from ``train.seed``."""
    return build_network(
        plans,
        cfg.model.configuration,
        input_channels=1,
        output_channels=output_channels,
        deep_supervision=False,
        seed=cfg.train.seed,
    )
