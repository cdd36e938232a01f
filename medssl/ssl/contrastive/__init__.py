"""Global and local contrastive learning for segmentation pretraining (Chaitanya et al.,
"Contrastive learning of global and local features for medical image segmentation with limited
annotations", NeurIPS 2020): the ``GR``/``GD-``/``GD`` global losses, the ``LR``/``LD`` local
losses and their projection heads."""

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
