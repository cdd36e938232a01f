"""Pretraining recipes: a YAML file validated into :class:`PretrainConfig`.

Unknown keys and wrong types are errors that name the key path and the file; nothing runs
before the whole file is valid. Every section is frozen: a changed recipe is a copy
(``model_copy(update=...)``), never an edit in place. The methods' sections are declared by
their packages (``mae3d``, ``contrastive``, ``graphmatch``) and found through
:mod:`medssl.ssl.registry`; the loop's settings are :class:`TrainSection`, which the engine
takes as it is. The ``configs/`` folder holds the recipes medssl ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, field_validator

from medssl.data.volumes import DEFAULT_EXCLUDE, NORMALIZATION_SCHEMES
from medssl.errors import InputError
from medssl.ssl import registry

if TYPE_CHECKING:
    from medssl.transforms.ssl import AugmentConfig

__all__ = [
    "AugmentSection",
    "DataSection",
    "ModelSection",
    "PretrainConfig",
    "TrainSection",
    "ViewsSection",
    "load_config",
]


_Section = registry.Section


class ModelSection(_Section):
    """The network: an nnU-Net plans file (or preset) and one of its configurations."""

    plans: str = "small"
    configuration: str = "3d_fullres"
    patch_size: list[int] | None = None


class AugmentSection(_Section):
    """Augmentation of the MAE methods' patches: the probabilities of
    :class:`medssl.transforms.ssl.AugmentConfig` (same defaults; no gamma or noise)."""

    flip_prob: float = Field(0.5, ge=0, le=1)
    affine_prob: float = Field(0.0, ge=0, le=1)
    intensity_prob: float = Field(0.2, ge=0, le=1)

    def augment_config(self) -> AugmentConfig:
        """These settings as the augmentation's configuration."""
        from medssl.transforms.ssl import AugmentConfig

        return AugmentConfig(**self.model_dump())


class DataSection(_Section):
    """Preprocessing, sampling and loading."""

    target_spacing: list[float] | None = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    normalization: str = "ZScoreNormalization"
    intensity_properties: dict[str, float] = Field(default_factory=dict)
    cache_dtype: Literal["float16", "float32"] = "float16"
    cache_dir: str | None = None
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
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


class ViewsSection(_Section):
    """Augmentation of the two views (contrastive and graph matching)."""

    jitter: float = Field(0.1, ge=0, le=0.5)
    flip_prob: float = Field(0.5, ge=0, le=1)
    affine_prob: float = Field(0.0, ge=0, le=1)
    intensity_prob: float = Field(0.8, ge=0, le=1)
    gamma_prob: float = Field(0.5, ge=0, le=1)
    noise_prob: float = Field(0.5, ge=0, le=1)

    def augment_config(self, aligned: bool) -> AugmentConfig:
        """The views' augmentation (``jitter`` is the view sampler's, not in it); ``aligned``
        views are not flipped or warped (their voxels must correspond)."""
        from medssl.transforms.ssl import AugmentConfig

        probs = self.model_dump(exclude={"jitter"})
        if aligned:
            probs.update(flip_prob=0.0, affine_prob=0.0)
        return AugmentConfig(**probs)


class TrainSection(_Section):
    """The training loop: the one declaration of its settings (:func:`medssl.ssl.engine.fit`
    takes this section; a stage's own step count goes in with ``model_copy(update=...)``).

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
            ``off``. YAML reads an unquoted ``off``/``no``/``false`` as a boolean: false
            means ``off``, true (``on``, ``yes``) means ``auto``.
        checkpoint_every: Steps between checkpoints (one is always written at the end).
        log_every: Steps between log lines/TensorBoard points.
        val_every: Steps between validation runs (0 = never).
        seed: Run seed (initialisation and data order).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (read by
            :func:`medssl.ssl.distributed.setup_distributed`, not by the loop).
    """

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

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_boolean(cls, v: Any) -> Any:
        # YAML 1.1 reads `amp: off` as False and `amp: on` as True
        if isinstance(v, bool):
            return "auto" if v else "off"
        return v

    def for_stage(self, steps: int) -> TrainSection:
        """This loop for a stage of ``steps`` steps (a warm-up no longer than the stage)."""
        return self.model_copy(
            update={"steps": steps, "warmup_steps": min(self.warmup_steps, max(0, steps - 1))}
        )


def _recipe_fields() -> dict[str, Any]:
    """The recipe's sections in their YAML order: model, data, the methods' sections (from
    :mod:`medssl.ssl.registry`), views, train."""
    fields: dict[str, Any] = {
        "model": (ModelSection, ModelSection()),
        "data": (DataSection, DataSection()),
    }
    for key, section in registry.sections().items():
        fields[key] = (section, section())
    fields["views"] = (ViewsSection, ViewsSection())
    fields["train"] = (TrainSection, TrainSection())
    return fields


_Recipe: Any = create_model(
    "PretrainConfig", __base__=_Section, __module__=__name__, **_recipe_fields()
)


class PretrainConfig(_Recipe):
    """A whole recipe (frozen): ``model``, ``data``, one section per method (``mae``,
    ``contrastive``, ``graphmatch``: the registered methods' settings), ``views``, ``train``.
    Change a copy: ``cfg.model_copy(update={"train": cfg.train.model_copy(update=...)})``."""

    if TYPE_CHECKING:
        model: ModelSection
        data: DataSection
        views: ViewsSection
        train: TrainSection

        def __getattr__(self, name: str) -> Any: ...  # the methods' sections

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)

    def with_steps(self, steps: int | None) -> PretrainConfig:
        """This recipe with ``train.steps`` replaced (itself when ``steps`` is ``None``)."""
        if steps is None:
            return self
        return self.model_copy(update={"train": self.train.model_copy(update={"steps": steps})})


def _section_list() -> str:
    """``"model, data, mae, contrastive, graphmatch, views and train"``."""
    keys = list(PretrainConfig.model_fields)
    return f"{', '.join(keys[:-1])} and {keys[-1]}"


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
            hint=f"sections are {_section_list()}; see configs/ for examples",
        ) from None
