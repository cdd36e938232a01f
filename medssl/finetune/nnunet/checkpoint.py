"""Pretrained weights as nnU-Net v2's ``-pretrained_weights`` reads them.

nnU-Net's ``load_pretrained_weights`` opens the file with ``torch.load`` (no ``map_location``),
reads only ``network_weights``, requires every key of the network it builds from its plans
(decoder included) with identical shapes, and skips only the ``.seg_layers.`` keys. So the
export holds the plain U-Net's full state dict on the CPU (S3D's sparse modules are plain
modules again and its mask tokens are left out), plus medssl's own metadata under ``"medssl"``
(plans, configuration, patch size, preprocessing, which keys were pretrained), which nnU-Net
ignores and medssl's fine-tuning reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medssl import __version__
from medssl.errors import InputError
from medssl.io import atomic_file, check_not_input, load_tensors_file
from medssl.models.checkpoint_meta import PretrainMeta
from medssl.models.unet import build_network

__all__ = ["EXPORT_FORMAT", "check_weights_fit", "export_nnunet", "read_export"]

EXPORT_FORMAT = "medssl-nnunet-export/1"
_SKIPPED_BY_NNUNET = ".seg_layers."
_REFUSED_HINT = (
    "give a checkpoint written by this version of medssl pretrain, a file written by medssl "
    "export-nnunet, or an nnU-Net checkpoint; pretraining checkpoints of earlier medssl builds "
    "are not read (start a new run)"
)


def _load(path: Path, *, numpy_scalars: bool = False) -> dict[str, Any]:
    """Tensors and plain values only (nothing in the file runs); see
    :func:`medssl.io.load_tensors_file`. ``numpy_scalars``: nnU-Net's own checkpoints."""
    if not path.is_file():
        raise InputError("no such checkpoint", path=path)
    return load_tensors_file(path, numpy_scalars=numpy_scalars, hint=_REFUSED_HINT)


def check_weights_fit(weights: dict[str, torch.Tensor], network: nn.Module) -> list[str]:
    """What stops nnU-Net from loading ``weights`` into ``network`` (empty when they fit).

    The same rule as nnU-Net's loader: every key of the network except ``.seg_layers.`` ones
    must be present with the same shape.
    """
    problems = []
    for key, value in network.state_dict().items():
        if _SKIPPED_BY_NNUNET in key:
            continue
        if key not in weights:
            problems.append(f"missing key {key} (shape {tuple(value.shape)})")
        elif tuple(weights[key].shape) != tuple(value.shape):
            problems.append(
                f"key {key}: checkpoint shape {tuple(weights[key].shape)}, "
                f"network shape {tuple(value.shape)}"
            )
    return problems


def export_nnunet(checkpoint: str | Path, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write a pretraining checkpoint as an nnU-Net ``-pretrained_weights`` file.

    Args:
        checkpoint: A ``checkpoint_final.pt``/``checkpoint_latest.pt`` of ``medssl pretrain``.
        output: The ``.pth``/``.pt`` file to write (atomically).
        overwrite: Replace an existing file.

    Returns:
        ``output``.

    Raises:
        InputError: Not a medssl pretraining checkpoint, its metadata is of a version this
            medssl does not read (:class:`~medssl.models.checkpoint_meta.PretrainMeta`), or
            its weights do not fit the network its plans build (names the key and shapes).
    """
    src, out = Path(checkpoint), Path(output)
    if out.exists() and not overwrite:
        raise InputError("output exists", path=out, hint="pass --overwrite or choose another file")
    check_not_input(out, [src])
    ckpt = _load(src)
    meta = PretrainMeta.from_checkpoint(ckpt, path=src)
    prefix = meta.network_prefix
    weights = {k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    # a fresh plain network from the same plans: nnU-Net's seeded initialisation for anything
    # the method did not train, and a strict check that nothing else is in the weights
    network = build_network(
        meta.plans,
        meta.configuration,
        input_channels=meta.input_channels,
        output_channels=meta.input_channels,
        deep_supervision=False,
        seed=0,
    )
    problems = check_weights_fit(weights, network)
    unexpected = sorted(set(weights) - set(network.state_dict()))
    if problems or unexpected:
        detail = "; ".join(problems[:5] + [f"unexpected key {k}" for k in unexpected[:5]])
        raise InputError(
            f"the checkpoint's weights do not fit the network its plans build: {detail}",
            path=src,
        )
    network.load_state_dict(weights, strict=True)
    frozen = {n for n, p in network.named_parameters() if _SKIPPED_BY_NNUNET in n}
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in network.state_dict().items()}
    record = {
        "format": EXPORT_FORMAT,
        "medssl_version": __version__,
        "method": meta.method,
        "step": int(ckpt.get("step", 0)),
        "plans": meta.plans,
        "configuration": meta.configuration,
        "patch_size": None if meta.patch_size is None else list(meta.patch_size),
        "preprocessing": meta.preprocessing,
        "input_channels": meta.input_channels,
        # methods that train part of the network (contrastive: the encoder and the first
        # decoder blocks) list those keys; the rest keeps nnU-Net's seeded initialisation. The
        # MAE reconstruction head is trained, but nnU-Net re-initialises every output layer.
        "pretrained_keys": sorted(
            k for k in meta.pretrained_keys or state if k in state and k not in frozen
        ),
        "source_checkpoint": src.name,
    }
    with atomic_file(out, verify=lambda p: load_tensors_file(p)) as tmp:
        torch.save({"network_weights": state, "medssl": record}, tmp)
    return out


def read_export(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and medssl metadata of an exported file."""
    obj = _load(Path(path))
    if "network_weights" not in obj:
        raise InputError("no network_weights inside: not an nnU-Net weights file", path=path)
    return obj["network_weights"], obj.get("medssl", {})
