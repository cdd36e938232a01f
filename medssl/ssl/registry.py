"""The pretraining methods: one registry that every method package fills.

Each method package of :mod:`medssl.ssl` (``mae3d``, ``contrastive``, ``graphmatch``) has a
``spec`` module that calls :func:`register` once per method it provides, with a
:class:`MethodSpec`: its name, a one-line summary (the CLI's help), its recipe section (a
frozen :class:`Section` whose defaults are the method's default settings; it becomes a key of
:class:`medssl.ssl.config.PretrainConfig`), its stage builder and an optional patch check.
The ``spec`` modules are found by looking into the subpackages of :mod:`medssl.ssl`, so a new
method touches one package: its own. They import no torch (the builders import what they need
when they run), so the CLI and a recipe's validation stay light.

Everything that lists the methods (``medssl pretrain --method``, the recipe's sections,
:func:`medssl.ssl.pretrain.pretrain`) reads :func:`method_names` or :func:`get`; the
pipeline's ``pretrain.method`` key is a typed ``Literal`` checked against the registry by
``tests/ssl/test_registry.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from medssl.ssl.config import PretrainConfig
    from medssl.ssl.stage import Stage, StageContext

__all__ = [
    "MethodSpec",
    "Section",
    "describe",
    "get",
    "method_names",
    "methods",
    "register",
    "sections",
]


class Section(BaseModel):
    """A frozen recipe section: unknown keys are errors, nothing is changed in place (use
    ``model_copy(update=...)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: ``check_patch(cfg, patch, stage_strides)``: raise :class:`medssl.errors.InputError` if
#: the method cannot train on ``patch`` (``stage_strides``: each network stage's cumulative
#: stride from the input, one list per stage).
PatchCheck = Callable[["PretrainConfig", list[int], list[list[int]]], None]


@dataclass(frozen=True)
class MethodSpec:
    """What a method package provides.

    Attributes:
        name: The method's name (``--method``, ``run.json``, the checkpoint's ``method``).
        summary: A few words for the CLI's help, e.g. ``"dense 3D MAE"``.
        order: Position in listings (help, messages): lower first.
        section: The recipe key of the method's settings (methods may share one: ``mae`` and
            ``s3d`` both read ``mae``), or ``None``.
        settings: The section's model; its defaults are the method's default settings.
        build: ``build(ctx) -> [Stage, ...]``: the engine runs of the method (one, or several
            that share the network, as contrastive's global and local stages).
        check_patch: Checks the patch size against the method (see :data:`PatchCheck`).
        check_resume: ``check_resume(saved)``: raise :class:`medssl.errors.InputError` if a
            run whose saved recipe (``config.yaml`` as read by YAML, every key written) is
            ``saved`` cannot be continued by this version of the method.
    """

    name: str
    summary: str
    order: int
    build: Callable[[StageContext], list[Stage]]
    section: str | None = None
    settings: type[Section] | None = None
    check_patch: PatchCheck | None = None
    check_resume: Callable[[dict], None] | None = None


_REGISTRY: dict[str, MethodSpec] = {}
_LOADED = False


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method (called by the ``spec`` module of its package).

    Raises:
        ValueError: The name is taken, or the section key is taken by another model.
    """
    if spec.name in _REGISTRY:
        raise ValueError(f"pretraining method {spec.name!r} is registered twice")
    if (spec.section is None) != (spec.settings is None):
        raise ValueError(f"method {spec.name!r}: give both section and settings, or neither")
    clash = [
        other.name
        for other in _REGISTRY.values()
        if spec.section is not None
        and other.section == spec.section
        and other.settings is not spec.settings
    ]
    if clash:
        raise ValueError(
            f"methods {clash[0]!r} and {spec.name!r} declare different models for the recipe "
            f"section {spec.section!r}"
        )
    _REGISTRY[spec.name] = spec
    return spec


def _load() -> None:
    """Import the ``spec`` module of every subpackage of :mod:`medssl.ssl` (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = importlib.import_module("medssl.ssl")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        name = f"medssl.ssl.{info.name}.spec"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def methods() -> tuple[MethodSpec, ...]:
    """Every registered method, in :attr:`MethodSpec.order`."""
    _load()
    return tuple(sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name)))


def method_names() -> tuple[str, ...]:
    """The names of :func:`methods`."""
    return tuple(s.name for s in methods())


def get(name: str) -> MethodSpec:
    """The method called ``name``.

    Raises:
        KeyError: No such method (the message lists the known ones).
    """
    _load()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")
    return _REGISTRY[name]


def sections() -> dict[str, type[Section]]:
    """The recipe sections of the methods (key -> model), in method order."""
    found: dict[str, type[Section]] = {}
    for spec in methods():
        if spec.section is not None and spec.settings is not None:
            found.setdefault(spec.section, spec.settings)
    return found


def describe() -> str:
    """``"mae (dense 3D MAE), s3d (...) or graphmatch (...)"``: the CLI's help."""
    parts = [f"{s.name} ({s.summary})" for s in methods()]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"
