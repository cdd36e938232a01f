"""nnU-Net-compatible U-Nets built from an nnU-Net v2 plans file (or a medssl preset).

The network is built by nnU-Net's own ``get_network_from_plans`` from the configuration's
``architecture`` entry, which is what ``nnUNetTrainer.build_network_architecture`` does when
nnU-Net fine-tunes. So a network medssl pretrains has exactly the keys and shapes of the one
nnU-Net builds from the same plans, and ``nnUNetv2_train -pretrained_weights`` accepts it.

Presets are complete nnU-Net plans dictionaries (one ``3d_fullres`` and one ``2d``
configuration each), so they can be written out as JSON (:func:`medssl.io.write_json`) and
handed to nnU-Net.

This package imports nothing of medssl but :mod:`medssl.errors`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medssl.errors import InputError

__all__ = [
    "PRESETS",
    "build_network",
    "configuration_dict",
    "configuration_dim",
    "load_plans",
    "network_dim",
    "preset_plans",
]

_RESENC_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
_ARCH_3D = {
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
}
_ARCH_2D = {
    "conv_op": "torch.nn.modules.conv.Conv2d",
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
}

# name: (features per stage, residual blocks per stage, 3D patch, 2D patch, batch 3D, batch 2D)
_PRESET_SHAPES: dict[str, tuple[list[int], list[int], list[int], list[int], int, int]] = {
    # tests and CPU smoke runs: 4 stages, 8..32 features
    "tiny": ([8, 16, 32, 32], [1, 1, 1, 1], [32, 32, 32], [64, 64], 2, 4),
    # CPU demos and quick runs on a laptop
    "small": ([16, 32, 64, 128, 160], [1, 2, 2, 2, 2], [64, 64, 64], [128, 128], 2, 8),
    # nnU-Net's ResEnc-L (nnUNetResEncUNetLPlans) at 1 mm: the nnssl pretraining network
    "resenc-l": (
        [32, 64, 128, 256, 320, 320],
        [1, 3, 4, 6, 6, 6],
        [160, 160, 160],
        [256, 256],
        2,
        12,
    ),
}

PRESETS: tuple[str, ...] = tuple(_PRESET_SHAPES)


def _architecture(features: list[int], blocks: list[int], dim: int) -> dict[str, Any]:
    n = len(features)
    k = [3] * dim
    return {
        "network_class_name": _RESENC_UNET,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(features),
            **(_ARCH_3D if dim == 3 else _ARCH_2D),
            "kernel_sizes": [list(k) for _ in range(n)],
            "strides": [[1] * dim] + [[2] * dim for _ in range(n - 1)],
            "n_blocks_per_stage": list(blocks),
            "n_conv_per_stage_decoder": [1] * (n - 1),
            "conv_bias": True,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _configuration(
    features: list[int], blocks: list[int], patch: list[int], batch: int, spacing: list[float]
) -> dict[str, Any]:
    dim = len(patch)
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "data_identifier": f"nnUNetPlans_{'3d_fullres' if dim == 3 else '2d'}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch,
        "patch_size": list(patch),
        "median_image_size_in_voxels": list(patch),
        "spacing": list(spacing[-dim:]),
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resample,
        "resampling_fn_seg_kwargs": {**resample, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resample, "order": 1},
        "architecture": _architecture(features, blocks, dim),
        "batch_dice": True,
    }


def preset_plans(name: str, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict:
    """A complete nnU-Net v2 plans dictionary for a medssl preset.

    Args:
        name: One of :data:`PRESETS` (``tiny``, ``small``, ``resenc-l``).
        spacing: Target spacing ``(z, y, x)`` in mm written into the configurations.

    Returns:
        Plans with a ``3d_fullres`` and a ``2d`` configuration (ResEnc U-Net, instance norm,
        leaky ReLU, stride-2 stages), in the layout ``nnUNetv2_plan_experiment`` writes.
    """
    if name not in _PRESET_SHAPES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    features, blocks, patch3, patch2, batch3, batch2 = _PRESET_SHAPES[name]
    sp = [float(s) for s in spacing]
    return {
        "dataset_name": "medssl_pretraining",
        "plans_name": f"medssl_{name.replace('-', '_')}",
        "original_median_spacing_after_transp": sp,
        "original_median_shape_after_transp": list(patch3),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": _configuration(features, blocks, patch2, batch2, sp),
            "3d_fullres": _configuration(features, blocks, patch3, batch3, sp),
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }


def load_plans(source: str | Path | dict) -> dict:
    """Plans from a preset name, an nnU-Net ``plans.json`` file or a dictionary (copied)."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    if isinstance(source, str) and source in _PRESET_SHAPES:
        return preset_plans(source)
    path = Path(source)
    if not path.is_file():
        raise InputError(
            f"plans {source!s}: not a preset ({', '.join(PRESETS)}) and no such file",
            hint="give a preset name or the path of an nnU-Net plans JSON file",
        )
    try:
        plans = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"not a JSON file ({err})", path=path) from None
    if not isinstance(plans, dict) or "configurations" not in plans:
        raise InputError("no 'configurations' entry; is this an nnU-Net plans file?", path=path)
    return plans


def configuration_dict(plans: dict, configuration: str) -> dict:
    """One configuration of a plans dictionary, as nnU-Net resolves it.

    nnU-Net's own ``PlansManager`` resolves ``inherits_from`` (``3d_cascade_fullres`` and
    friends), so the result has every key of the configuration (``patch_size``,
    ``architecture``, ``normalization_schemes``, ``spacing``, ...).

    Args:
        plans: A plans dictionary (as :func:`load_plans` returns).
        configuration: The configuration's name (``3d_fullres``, ``2d``, ...).

    Returns:
        The configuration's dictionary.

    Raises:
        InputError: The plans have no such configuration, or it does not resolve.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        return PlansManager(plans).get_configuration(configuration).configuration
    except (ValueError, RuntimeError, KeyError) as err:
        raise InputError(f"plans configuration {configuration!r}: {err}") from None


def configuration_dim(plans: dict, configuration: str) -> int:
    """2 or 3: the number of spatial axes of a plans configuration."""
    return len(configuration_dict(plans, configuration)["patch_size"])


def network_dim(network: nn.Module) -> int:
    """2 or 3: the number of spatial axes of a U-Net built by :func:`build_network` (read from
    its encoder's first convolution)."""
    return network.encoder.stem.convs[0].conv.weight.dim() - 2


def build_network(
    plans: str | Path | dict,
    configuration: str = "3d_fullres",
    *,
    input_channels: int = 1,
    output_channels: int = 1,
    deep_supervision: bool = False,
    seed: int | None = None,
) -> nn.Module:
    """Build the U-Net of a plans configuration the way nnU-Net does.

    Args:
        plans: Preset name, plans file or plans dictionary.
        configuration: Plans configuration (``3d_fullres``, ``2d``, ...): it sets the conv type.
        input_channels: Image channels.
        output_channels: Channels of the output (segmentation) layers; a reconstruction head
            for MAE uses ``input_channels``.
        deep_supervision: As nnU-Net's trainer (it builds with deep supervision on; the
            output layers are the only keys that depend on it).
        seed: When given, the initialisation is drawn from ``torch.Generator`` seeded with it
            (the global RNG is left untouched).

    Returns:
        The ``dynamic_network_architectures`` module (e.g. ``ResidualEncoderUNet``), with
        nnU-Net's ``InitWeights_He`` initialisation. Input ``(B, C, *patch)``.
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    cfg = configuration_dict(load_plans(plans), configuration)
    arch = cfg["architecture"]

    def make() -> nn.Module:
        return get_network_from_plans(
            arch["network_class_name"],
            arch["arch_kwargs"],
            arch["_kw_requires_import"],
            input_channels,
            output_channels,
            allow_init=True,
            deep_supervision=deep_supervision,
        )

    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()
