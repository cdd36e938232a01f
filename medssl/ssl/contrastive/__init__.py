"""Global and local contrastive learning for segmentation pretraining (Chaitanya et al.,
"Contrastive learning of global and local features for medical image segmentation with limited
annotations", NeurIPS 2020): the ``GR``/``GD-``/``GD`` global losses, the ``LR``/``LD`` local
losses and their projection heads.

The names are imported on first use (``from medssl.ssl.contrastive import X`` works as before), so
that the method registry can read ``medssl.ssl.contrastive.spec`` without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medssl.ssl.lazy import exports

if TYPE_CHECKING:
    from medssl.ssl.contrastive.heads import GlobalProjectionHead, LocalProjectionHead
    from medssl.ssl.contrastive.losses import (
        GlobalStrategy,
        LocalStrategy,
        contrastive_masks,
        global_contrastive_loss,
        grid_positions,
        local_contrastive_loss,
        local_masks,
        region_embeddings,
    )

__all__ = [
    "GlobalProjectionHead",
    "GlobalStrategy",
    "LocalProjectionHead",
    "LocalStrategy",
    "contrastive_masks",
    "global_contrastive_loss",
    "grid_positions",
    "local_contrastive_loss",
    "local_masks",
    "region_embeddings",
]

_WHERE = {
    "GlobalProjectionHead": "medssl.ssl.contrastive.heads",
    "GlobalStrategy": "medssl.ssl.contrastive.losses",
    "LocalProjectionHead": "medssl.ssl.contrastive.heads",
    "LocalStrategy": "medssl.ssl.contrastive.losses",
    "contrastive_masks": "medssl.ssl.contrastive.losses",
    "global_contrastive_loss": "medssl.ssl.contrastive.losses",
    "grid_positions": "medssl.ssl.contrastive.losses",
    "local_contrastive_loss": "medssl.ssl.contrastive.losses",
    "local_masks": "medssl.ssl.contrastive.losses",
    "region_embeddings": "medssl.ssl.contrastive.losses",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
