"""The nnU-Net v2 bridge: pretrained checkpoints in the form nnU-Net loads."""

from medssl.finetune.nnunet.checkpoint import (
    EXPORT_FORMAT,
    check_weights_fit,
    export_nnunet,
    read_export,
)

__all__ = ["EXPORT_FORMAT", "check_weights_fit", "export_nnunet", "read_export"]
