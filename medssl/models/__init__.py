"""Network builders: nnU-Net-compatible U-Nets built through dynamic_network_architectures."""

from medssl.models.unet import (
    PRESETS,
    build_network,
    configuration_dict,
    configuration_dim,
    load_plans,
    preset_plans,
)

__all__ = [
    "PRESETS",
    "build_network",
    "configuration_dict",
    "configuration_dim",
    "load_plans",
    "preset_plans",
]
