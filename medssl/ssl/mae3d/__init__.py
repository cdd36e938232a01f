"""3D masked autoencoders for CNNs (Wald et al., "Revisiting MAE pre-training for 3D medical
image segmentation", CVPR 2025): block masking, SparK-style sparse encoders with mask tokens
(S3D), the masked MSE loss.

The names are imported on first use (``from medssl.ssl.mae3d import X`` works as before), so
that the method registry can read ``medssl.ssl.mae3d.spec`` without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medssl.ssl.lazy import exports

if TYPE_CHECKING:
    from medssl.ssl.mae3d.masking import (
        BlockMasker,
        RecordedMasker,
        block_grid,
        expand_mask,
        random_block_mask,
    )
    from medssl.ssl.mae3d.model import MAEObjective, MAEOutput, MaskedAutoencoder, masked_mse
    from medssl.ssl.mae3d.sparse import MaskState, sparsify, unsparsify

__all__ = [
    "BlockMasker",
    "MAEObjective",
    "MAEOutput",
    "MaskState",
    "MaskedAutoencoder",
    "RecordedMasker",
    "block_grid",
    "expand_mask",
    "masked_mse",
    "random_block_mask",
    "sparsify",
    "unsparsify",
]

_WHERE = {
    "BlockMasker": "medssl.ssl.mae3d.masking",
    "MAEObjective": "medssl.ssl.mae3d.model",
    "MAEOutput": "medssl.ssl.mae3d.model",
    "MaskState": "medssl.ssl.mae3d.sparse",
    "MaskedAutoencoder": "medssl.ssl.mae3d.model",
    "RecordedMasker": "medssl.ssl.mae3d.masking",
    "block_grid": "medssl.ssl.mae3d.masking",
    "expand_mask": "medssl.ssl.mae3d.masking",
    "masked_mse": "medssl.ssl.mae3d.model",
    "random_block_mask": "medssl.ssl.mae3d.masking",
    "sparsify": "medssl.ssl.mae3d.sparse",
    "unsparsify": "medssl.ssl.mae3d.sparse",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
