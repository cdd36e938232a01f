"""What a pretraining checkpoint records about its network: the versioned contract between
``medssl pretrain`` (the writer, :mod:`medssl.ssl.pretrain`) and its readers (the nnU-Net
export of :mod:`medssl.finetune.nnunet.checkpoint`, fine-tuning through it, the pretraining
probes).

A checkpoint is ``{"model": state dict, "medssl": metadata, "step": ..., ...}``; the metadata
is :meth:`PretrainMeta.to_dict`. It lives here, beside the networks, because both ``ssl`` and
``finetune`` import ``models`` and neither imports the other.

Versions of the metadata:

* 0: checkpoints written before the ``"version"`` key (``format`` ``medssl-pretrain/1``). Read
  with the writer's defaults of that time: ``network_prefix`` ``"network."`` (the prefix of
  the U-Net's keys in the objective's state dict; MAE and S3D wrote ``"mae.network."``),
  ``input_channels`` 1.
* 1: the same keys plus ``"version": 1``.

This module imports nothing of medssl but :mod:`medssl.errors` (and the version string).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from os import PathLike
from typing import Any

from medssl import __version__
from medssl.errors import InputError

__all__ = ["CHECKPOINT_FORMAT", "META_VERSION", "PretrainMeta"]

#: The ``"format"`` every pretraining checkpoint's metadata carries (all versions).
CHECKPOINT_FORMAT = "medssl-pretrain/1"
#: The metadata version this medssl writes; it reads 0 to this.
META_VERSION = 1
#: The U-Net's key prefix in checkpoints that do not name it (version 0: what the writer used).
DEFAULT_NETWORK_PREFIX = "network."

_NOT_PRETRAINING_HINT = (
    "export a checkpoint_final.pt or checkpoint_latest.pt written by medssl pretrain"
)


@dataclass(frozen=True)
class PretrainMeta:
    """The metadata of a pretraining checkpoint (stored under its ``"medssl"`` key).

    Attributes:
        method: The pretraining method (``mae``, ``s3d``, ``contrastive``, ``graphmatch``).
        plans: The nnU-Net plans the network was built from.
        configuration: The plans configuration (``3d_fullres``, ``2d``, ...).
        input_channels: Image channels of the network.
        network_prefix: Prefix of the U-Net's keys in the checkpoint's ``"model"`` state dict
            (the objective wraps the network: ``"network."``, ``"mae.network."`` for MAE).
        patch_size: The training patch, ``(z, y, x)`` or ``(y, x)``; None when not recorded.
        preprocessing: :meth:`medssl.data.volumes.Preprocessing.to_dict` of the training data.
        data_volumes: How many volumes were trained on.
        pretrained_keys: The U-Net keys the method trains (None: all of them).
        stage: The stage of a staged method (contrastive: ``global``, ``local``).
        strategy: The partition strategy of a contrastive stage (one name, or one per stage).
        settings: The method's own sections, written at the top level of the dictionary
            (``mask`` for MAE and S3D, ``contrastive``, ``graphmatch``).
        medssl_version: The medssl that wrote the checkpoint.
        version: The metadata version: :data:`META_VERSION` when made by this medssl, the
            version read by :meth:`from_dict` (its missing keys filled with that version's
            defaults).
    """

    method: str
    plans: dict[str, Any]
    configuration: str
    input_channels: int = 1
    network_prefix: str = DEFAULT_NETWORK_PREFIX
    patch_size: tuple[int, ...] | None = None
    preprocessing: dict[str, Any] | None = None
    data_volumes: int | None = None
    pretrained_keys: tuple[str, ...] | None = None
    stage: str | None = None
    strategy: str | tuple[str, ...] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    medssl_version: str = __version__
    version: int = META_VERSION

    def __post_init__(self) -> None:
        clash = sorted(set(self.settings) & (_FIELD_NAMES | {"format"}))
        if clash:
            raise ValueError(f"settings may not use the metadata's own keys: {clash}")

    def to_dict(self) -> dict[str, Any]:
        """The dictionary stored in a checkpoint (plain values; unset optional fields left
        out), which :meth:`from_dict` reads back."""
        out: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "version": self.version}
        for f in fields(self):
            if f.name in ("settings", "version"):
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out.update(self.settings)
        return out

    @classmethod
    def from_dict(cls, meta: Any, *, path: str | PathLike[str] | None = None) -> PretrainMeta:
        """Read the metadata of a checkpoint of any version up to :data:`META_VERSION`.

        Args:
            meta: The checkpoint's ``"medssl"`` entry.
            path: The checkpoint, named in errors.

        Raises:
            InputError: Not pretraining metadata (no plans or configuration), another
                format, or a version this medssl does not read (a newer medssl wrote it).
        """
        if not isinstance(meta, Mapping):
            raise InputError(
                "not a medssl pretraining checkpoint (no medssl metadata inside)",
                path=path,
                hint=_NOT_PRETRAINING_HINT,
            )
        version = meta.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise InputError(
                f"the checkpoint's metadata version is {version!r}, not a number",
                path=path,
                hint=_NOT_PRETRAINING_HINT,
            )
        if not 0 <= version <= META_VERSION:
            raise InputError(
                f"the checkpoint's metadata is version {version}; this medssl "
                f"({__version__}) reads versions 0 to {META_VERSION}",
                path=path,
                hint="it was written by a newer medssl: update medssl to read it",
            )
        fmt = meta.get("format", CHECKPOINT_FORMAT)
        if fmt != CHECKPOINT_FORMAT:
            raise InputError(
                f"the checkpoint's format is {fmt!r}, not {CHECKPOINT_FORMAT!r}",
                path=path,
                hint=_NOT_PRETRAINING_HINT,
            )
        if not isinstance(meta.get("plans"), dict) or not isinstance(
            meta.get("configuration"), str
        ):
            raise InputError(
                "not a medssl pretraining checkpoint (no model or plans inside)",
                path=path,
                hint=_NOT_PRETRAINING_HINT,
            )

        def optional(key: str, convert: Any) -> Any:
            value = meta.get(key)
            return None if value is None else convert(value)

        try:
            return cls(
                method=str(meta.get("method", "")),
                plans=meta["plans"],
                configuration=meta["configuration"],
                input_channels=int(meta.get("input_channels", 1)),
                network_prefix=str(meta.get("network_prefix", DEFAULT_NETWORK_PREFIX)),
                patch_size=optional("patch_size", lambda v: tuple(int(x) for x in v)),
                preprocessing=optional("preprocessing", dict),
                data_volumes=optional("data_volumes", int),
                pretrained_keys=optional("pretrained_keys", lambda v: tuple(str(k) for k in v)),
                stage=optional("stage", str),
                strategy=optional("strategy", lambda v: v if isinstance(v, str) else tuple(v)),
                settings={k: v for k, v in meta.items() if k not in _FIELD_NAMES | {"format"}},
                medssl_version=str(meta.get("medssl_version", "unknown")),
                version=version,
            )
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"the checkpoint's medssl metadata is malformed ({exc})",
                path=path,
                hint=_NOT_PRETRAINING_HINT,
            ) from None

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Any, *, path: str | PathLike[str] | None = None
    ) -> PretrainMeta:
        """The metadata of a loaded pretraining checkpoint (which must hold a ``"model"``).

        Raises:
            InputError: As :meth:`from_dict`, or no model inside.
        """
        if not isinstance(checkpoint, Mapping) or "model" not in checkpoint:
            raise InputError(
                "not a medssl pretraining checkpoint (no model or plans inside)",
                path=path,
                hint=_NOT_PRETRAINING_HINT,
            )
        return cls.from_dict(checkpoint.get("medssl") or {}, path=path)


_FIELD_NAMES = frozenset(f.name for f in fields(PretrainMeta))
