"""Network builders (nnU-Net-compatible U-Nets built through dynamic_network_architectures)
and the metadata a pretraining checkpoint records about its network."""

from medssl.models.checkpoint_meta import CHECKPOINT_FORMAT, META_VERSION, PretrainMeta
from medssl.models.unet import (
    PRESETS,
    build_network,
    configuration_dict,
    configuration_dim,
    load_plans,
    network_dim,
    preset_plans,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "META_VERSION",
    "PRESETS",
    "PretrainMeta",
    "build_network",
    "configuration_dict",
    "configuration_dim",
    "load_plans",
    "network_dim",
    "preset_plans",
]
