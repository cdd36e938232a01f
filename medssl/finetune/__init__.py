"""Fine-tuning bridges (nnU-Net v2).

The workflow's settings are :class:`medssl.finetune.settings.FinetuneSettings` and its one
entry point is :func:`medssl.finetune.nnunet.run.finetune` (``finetune(settings, run_dir)``),
which ``medssl finetune`` and the pipeline's ``finetune`` stage both call. ``finetune`` is
imported on first use: importing this package (for the settings) loads no torch or nnU-Net.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medssl.finetune.settings import FinetuneSettings

if TYPE_CHECKING:
    from medssl.finetune.nnunet.run import FinetuneResult, finetune

__all__ = ["FinetuneResult", "FinetuneSettings", "finetune"]


def __getattr__(name: str) -> Any:
    if name in ("finetune", "FinetuneResult"):
        from medssl.finetune.nnunet import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
