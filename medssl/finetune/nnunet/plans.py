"""Fine-tuning plans: nnU-Net's own plans for the fine-tuning data, with the pretrained
network's architecture put in.

nnU-Net's documented route (``nnUNetv2_move_plans_between_datasets``) copies a whole plans
file from one dataset to another: the intensity properties of the *source* fingerprint ride
along (wrong for CT normalisation of the target), ``dataset.json`` is not copied to the
preprocessed folder so ``nnUNetv2_preprocess`` fails (nnU-Net issue #2560), and cascade
configurations without ``data_identifier`` break it (#1488). medssl goes the other way: nnU-Net
plans the fine-tuning dataset itself (its fingerprint, normalisation, resampling, label
manager and ``dataset.json`` stay), and only the network (``architecture``), the patch size,
the batch size and (by default) the voxel spacing of the pretraining are copied into one
configuration of a new plans file, with its own ``data_identifier``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from medssl.errors import InputError
from medssl.models.unet import build_network, configuration_dict

__all__ = ["check_normalisation", "check_pretrained_fits", "transfer_plans"]


def transfer_plans(
    target: dict,
    export: dict[str, Any],
    plans_name: str,
    *,
    spacing: str = "pretrained",
) -> tuple[dict, list[str]]:
    """Plans for fine-tuning a pretrained network on the dataset ``target`` was planned for.

    Args:
        target: nnU-Net's plans of the fine-tuning dataset (``nnUNetPlans.json``).
        export: The ``"medssl"`` record of an exported checkpoint (plans, configuration, patch
            size, preprocessing).
        plans_name: Name of the new plans (the file is ``{plans_name}.json``).
        spacing: ``"pretrained"`` (resample the fine-tuning data to the pretraining spacing,
            so the network sees the scale it learned) or ``"target"`` (nnU-Net's spacing).

    Returns:
        The new plans (one configuration, named like the pretrained one) and notes for the
        log (what was taken from where).

    Raises:
        InputError: nnU-Net did not plan that configuration for this data (e.g. 2D images for
            a 3D network).
    """
    if spacing not in ("pretrained", "target"):
        raise InputError(f"spacing must be 'pretrained' or 'target', got {spacing!r}")
    conf_name = export["configuration"]
    source = configuration_dict(export["plans"], conf_name)
    if conf_name not in target.get("configurations", {}):
        raise InputError(
            f"nnU-Net planned no {conf_name!r} configuration for the fine-tuning data (it "
            f"planned {', '.join(target.get('configurations', {}))}); the pretrained network "
            f"is a {conf_name} network",
            hint="fine-tune on data of the pretrained network's dimensionality",
        )
    planned = configuration_dict(target, conf_name)
    conf = copy.deepcopy(planned)
    conf.pop("inherits_from", None)
    conf.pop("previous_stage", None)
    conf.pop("next_stage", None)
    conf["architecture"] = copy.deepcopy(source["architecture"])
    patch = [int(p) for p in (export.get("patch_size") or source["patch_size"])]
    conf["patch_size"] = patch
    conf["batch_size"] = int(source["batch_size"])
    conf["data_identifier"] = f"{plans_name}_{conf_name}"
    notes = [
        f"architecture, patch size {patch} and batch size {conf['batch_size']} from the "
        "pretrained checkpoint",
    ]
    pre = export.get("preprocessing") or {}
    pre_spacing = pre.get("target_spacing")
    if spacing == "pretrained" and pre_spacing:
        order = target.get("transpose_forward", list(range(len(pre_spacing))))
        transposed = [float(pre_spacing[i]) for i in order][-len(patch) :]
        if not all(
            math.isclose(a, b, rel_tol=1e-3)
            for a, b in zip(transposed, planned["spacing"], strict=True)
        ):
            notes.append(
                f"spacing {transposed} mm of the pretraining (nnU-Net planned "
                f"{[round(s, 4) for s in planned['spacing']]} mm for this data)"
            )
        conf["spacing"] = transposed
    else:
        notes.append(f"spacing {planned['spacing']} mm as nnU-Net planned it for this data")
    plans = copy.deepcopy(target)
    plans["plans_name"] = plans_name
    plans["configurations"] = {conf_name: conf}
    return plans, notes


def check_normalisation(plans: dict, configuration: str, export: dict[str, Any]) -> list[str]:
    """Warnings where the fine-tuning normalisation differs from the pretraining one."""
    pre = export.get("preprocessing") or {}
    recorded = pre.get("normalization")
    if not recorded:
        return ["the checkpoint records no intensity normalisation; it could not be checked"]
    planned = configuration_dict(plans, configuration)["normalization_schemes"]
    warnings = []
    if any(p != recorded for p in planned):
        warnings.append(
            f"intensity normalisation differs: the network was pretrained on {recorded} "
            f"inputs, nnU-Net plans {', '.join(planned)} for the fine-tuning data (pass "
            "--modality CT for CT normalisation, MR for z-score)"
        )
    elif recorded == "CTNormalization":
        props = pre.get("intensity_properties") or {}
        mine = (plans.get("foreground_intensity_properties_per_channel") or {}).get("0", {})
        for key in ("percentile_00_5", "percentile_99_5"):
            a, b = props.get(key), mine.get(key)
            if a is not None and b is not None and abs(float(a) - float(b)) > 100.0:
                warnings.append(
                    f"CT clipping window differs: {key} {float(a):.0f} HU in pretraining, "
                    f"{float(b):.0f} HU in the fine-tuning data's fingerprint"
                )
    return warnings


def check_pretrained_fits(
    weights: dict, plans: dict, configuration: str, *, input_channels: int, num_labels: int
) -> None:
    """Refuse weights nnU-Net's loader would reject, naming the key and both shapes.

    Raises:
        InputError: A key of the fine-tuning network (other than its output layers) is
            missing from the weights or has another shape.
    """
    from medssl.finetune.nnunet.checkpoint import check_weights_fit

    network = build_network(
        plans,
        configuration,
        input_channels=input_channels,
        output_channels=num_labels,
        deep_supervision=True,
        seed=0,
    )
    problems = check_weights_fit(weights, network)
    if problems:
        missing = sum(p.startswith("missing key") for p in problems)
        total = sum(".seg_layers." not in k for k in network.state_dict())
        counts = f"{missing} of {total} keys missing, {len(problems) - missing} with other shapes"
        raise InputError(
            f"the pretrained weights do not fit the fine-tuning network ({counts}): "
            + "; ".join(problems[:4]),
            hint="the weights were trained for another network: give a file written by "
            "medssl export-nnunet (or a medssl pretraining checkpoint), whose plans medssl "
            "transfers, with the same number of image channels; or train with --scratch",
        )
