"""Names a package exports without importing them until first use.

The method packages (``mae3d``, ``contrastive``, ``graphmatch``) export torch classes, yet the
method registry reads their ``spec`` modules without loading torch. Each package declares
where its names live and takes its module ``__getattr__``/``__dir__`` from :func:`exports`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: The package's ``__name__`` (for the error message).
        where: Each exported name -> the module that defines it.

    Returns:
        ``(__getattr__, __dir__)``: ``__getattr__(name)`` imports ``where[name]`` and returns
        its attribute (an unknown name raises :class:`AttributeError`, as a module would);
        ``__dir__()`` lists the exported names, sorted.
    """

    def getattr_(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(where)

    return getattr_, dir_
