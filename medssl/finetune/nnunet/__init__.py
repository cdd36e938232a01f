"""The nnU-Net v2 bridge: pretrained checkpoints in the form nnU-Net loads, datasets in its raw
format, plans transfer, fine-tuning runs through its own commands, Dice and DICOM SEG."""

from medssl.finetune.nnunet.checkpoint import (
    EXPORT_FORMAT,
    check_weights_fit,
    export_nnunet,
    read_export,
)
from medssl.finetune.nnunet.dataset import Case, export_dataset, pair_cases
from medssl.finetune.nnunet.plans import check_normalisation, check_pretrained_fits, transfer_plans
from medssl.finetune.nnunet.run import FinetuneResult, FinetuneSettings, dice_per_label, finetune

__all__ = [
    "EXPORT_FORMAT",
    "Case",
    "FinetuneResult",
    "FinetuneSettings",
    "check_normalisation",
    "check_pretrained_fits",
    "check_weights_fit",
    "dice_per_label",
    "export_dataset",
    "export_nnunet",
    "finetune",
    "pair_cases",
    "read_export",
    "transfer_plans",
]
