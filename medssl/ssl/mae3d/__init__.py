"""3D masked autoencoders for CNNs (Wald et al., "Revisiting MAE pre-training for 3D medical
image segmentation", CVPR 2025): block masking, SparK-style sparse encoders with mask tokens
(S3D), the masked MSE loss."""

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
