"""Pretraining recipes: a YAML file validated into :class:`PretrainConfig`.

Unknown keys and wrong types are errors that name the key path and the file; nothing runs
before the whole file is valid. The ``configs/`` folder holds the recipes medssl ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medssl.data.volumes import DEFAULT_EXCLUDE, NORMALIZATION_SCHEMES
from medssl.errors import InputError

__all__ = ["PretrainConfig", "load_config"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    """The network: an nnU-Net plans file (or preset) and one of its configurations."""

    plans: str = "small"
    configuration: str = "3d_fullres"
    patch_size: list[int] | None = None


class AugmentSection(_Section):
    flip_prob: float = Field(0.5, ge=0, le=1)
    affine_prob: float = Field(0.0, ge=0, le=1)
    intensity_prob: float = Field(0.2, ge=0, le=1)


class DataSection(_Section):
    """Preprocessing, sampling and loading."""

    target_spacing: list[float] | None = [1.0, 1.0, 1.0]
    normalization: str = "ZScoreNormalization"
    intensity_properties: dict[str, float] = {}
    cache_dtype: Literal["float16", "float32"] = "float16"
    cache_dir: str | None = None
    exclude: list[str] = list(DEFAULT_EXCLUDE)
    foreground_prob: float = Field(0.33, ge=0, le=1)
    num_workers: int = Field(2, ge=0)
    preprocess_workers: int = Field(1, ge=1)
    val_samples: int = Field(16, ge=1)
    augment: AugmentSection = AugmentSection()

    @field_validator("normalization")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in NORMALIZATION_SCHEMES:
            raise ValueError(f"must be one of {', '.join(NORMALIZATION_SCHEMES)}")
        return v

    @field_validator("target_spacing")
    @classmethod
    def _spacing(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 3 or min(v) <= 0):
            raise ValueError("must be three positive numbers (z, y, x) in mm, or null")
        return v

    @field_validator("intensity_properties")
    @classmethod
    def _ct_props(cls, v: dict[str, float]) -> dict[str, float]:
        needed = {"mean", "std", "percentile_00_5", "percentile_99_5"}
        if v and not needed <= set(v):
            raise ValueError(
                f"needs all of {', '.join(sorted(needed))} (or leave it empty to compute them)"
            )
        return v


class MaskSection(_Section):
    """MAE masking (Revisiting MAE: 16³ blocks, 75 %)."""

    block_size: int = Field(16, ge=1)
    mask_ratio: float = Field(0.75, ge=0, lt=1)


class ContrastiveSection(_Section):
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


class GraphMatchSection(_Section):
    """LVM-Med (NeurIPS 2023): second-order graph matching of the two views of a batch."""

    k: int = Field(5, ge=1)
    alpha: float = Field(0.8, ge=0, le=1)
    lam: float = Field(80.0, gt=0)
    width: int = Field(128, ge=1)
    head_hidden: int = Field(1024, ge=1)
    head_out: int = Field(128, ge=1)
    edge_sigma: float = Field(1.0, gt=0)


class ViewsSection(_Section):
    """Augmentation of the two views (contrastive and graph matching)."""

    jitter: float = Field(0.1, ge=0, le=0.5)
    flip_prob: float = Field(0.5, ge=0, le=1)
    affine_prob: float = Field(0.0, ge=0, le=1)
    intensity_prob: float = Field(0.8, ge=0, le=1)
    gamma_prob: float = Field(0.5, ge=0, le=1)
    noise_prob: float = Field(0.5, ge=0, le=1)


class TrainSection(_Section):
    """The loop (see :class:`medssl.ssl.engine.EngineConfig`)."""

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(2, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(50, ge=0)
    schedule: Literal["cosine", "poly"] = "cosine"
    grad_clip: float = Field(12.0, ge=0)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    checkpoint_every: int = Field(250, ge=1)
    log_every: int = Field(10, ge=1)
    val_every: int = Field(0, ge=0)
    seed: int = 0
    device: str = "auto"


class PretrainConfig(_Section):
    """A whole recipe."""

    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    mae: MaskSection = MaskSection()
    contrastive: ContrastiveSection = ContrastiveSection()
    graphmatch: GraphMatchSection = GraphMatchSection()
    views: ViewsSection = ViewsSection()
    train: TrainSection = TrainSection()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def load_config(source: str | Path | dict[str, Any] | None = None) -> PretrainConfig:
    """Validate a recipe from a YAML file, a dictionary or nothing (all defaults).

    Raises:
        InputError: The file is missing or not YAML, or a key is unknown or has a wrong value
            (every problem is listed with its key path).
    """
    if source is None:
        return PretrainConfig()
    path = None
    if isinstance(source, dict):
        raw: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError("no such config file", path=path, hint="see the files in configs/")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid YAML ({exc})", path=path) from None
    if not isinstance(raw, dict):
        raise InputError("a config must be a mapping of sections", path=path)
    try:
        return PretrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(
            f"invalid config: {_format_error(exc)}",
            path=path,
            hint="sections are model, data, mae, contrastive, graphmatch, views and train; "
            "see configs/ for examples",
        ) from None
