"""What a pretraining run is asked to do: one typed, frozen settings model.

:class:`PretrainSettings` is the method and the recipe
(:class:`medssl.ssl.config.PretrainConfig`, itself frozen). ``medssl pretrain`` fills it
from ``--method``, ``--config`` and ``--steps``; the pipeline's ``pretrain`` stage from its
``method``, ``config`` and ``steps`` keys (:meth:`PretrainSettings.from_options` for both);
:func:`medssl.ssl.pretrain.pretrain` takes it.

``recipe`` is ``None`` when none was given: a new run uses the defaults, a resumed run its own
``config.yaml``; a recipe given to a resumed run must equal the run's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from medssl.errors import InputError
from medssl.ssl import registry
from medssl.ssl.config import PretrainConfig, load_config

__all__ = ["PretrainSettings"]


class PretrainSettings(BaseModel):
    """Settings of a pretraining run (frozen).

    Attributes:
        method: A registered method (:func:`medssl.ssl.registry.method_names`).
        recipe: The recipe, or ``None`` (defaults for a new run; the run's own on resume).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    recipe: PretrainConfig | None = None

    @field_validator("method")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in registry.method_names():
            raise ValueError(f"unknown method {v!r}; choose one of {registry.describe()}")
        return v

    @classmethod
    def from_options(
        cls,
        method: str,
        config: str | Path | dict[str, Any] | PretrainConfig | None = None,
        steps: int | None = None,
    ) -> PretrainSettings:
        """The settings of ``--method``, ``--config`` (a YAML path, a dict or a recipe) and
        ``--steps`` (replaces ``train.steps``). Without ``config`` and ``steps`` the recipe
        stays ``None``.

        Raises:
            InputError: The method is not registered, or the recipe is invalid.
        """
        names = registry.method_names()
        if method not in names:
            raise InputError(f"unknown method {method!r}; choose one of {', '.join(names)}")
        recipe = None
        if config is not None or steps is not None:
            base = config if isinstance(config, PretrainConfig) else load_config(config)
            recipe = base.with_steps(steps)
        return cls(method=method, recipe=recipe)

    def resolved_recipe(self) -> PretrainConfig:
        """The recipe, or the defaults when none was given."""
        return self.recipe if self.recipe is not None else PretrainConfig()
