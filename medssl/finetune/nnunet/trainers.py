"""nnU-Net v2 trainer classes for fine-tuning pretrained networks.

nnU-Net finds them by name through the ``nnUNet_extTrainer`` environment variable (medssl
writes a one-line module re-exporting them into each run folder and points the variable
there), so training is nnU-Net's own loop, data augmentation, loss, validation and
checkpointing; these classes change only the learning-rate schedule, the budget, the seed and
whether deep supervision is on.

* :class:`nnUNetTrainer_medssl`: nnU-Net's budget (1000 epochs x 250 iterations, SGD with
  Nesterov momentum 0.99, peak lr 1e-2, poly decay) with a **linear warm-up** over the first
  5 % of iterations, updated every iteration. nnU-Net's stock trainer starts at lr 1e-2 with no
  warm-up, which overwrites much of what pretraining gave; the 3D MAE papers fine-tune with a
  warm-up.
* :class:`nnUNetTrainer_medsslShort`: the same schedule on a short budget (10 epochs x 25
  iterations, 5 validation iterations, a checkpoint every epoch) for tests, CPU demos and
  the benchmark.

Both read overrides from the environment, which ``medssl finetune`` sets per run and records
in the run folder: ``MEDSSL_FT_EPOCHS``, ``MEDSSL_FT_ITERS``, ``MEDSSL_FT_VAL_ITERS``,
``MEDSSL_FT_LR``, ``MEDSSL_FT_WARMUP`` (fraction of all iterations),
``MEDSSL_FT_DEEP_SUPERVISION`` (0 or 1), ``MEDSSL_FT_SEED`` (seeds
Python, NumPy and PyTorch before the network is built: initialisation, case sampling and
augmentation are then repeatable with ``nnUNet_n_proc_DA=0``).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch.optim.lr_scheduler import _LRScheduler

__all__ = ["WarmupPolyLR", "nnUNetTrainer_medssl", "nnUNetTrainer_medsslShort"]


class WarmupPolyLR(_LRScheduler):
    """Linear warm-up to ``peak_lr`` over ``warmup_iters``, then nnU-Net's poly decay
    (exponent 0.9) over the remaining iterations.

    ``step(epoch)`` (what nnU-Net calls at each epoch start) sets the lr of the epoch's first
    iteration; :meth:`set_iteration` sets it for any iteration.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        peak_lr: float,
        total_iters: int,
        warmup_iters: int,
        iters_per_epoch: int,
        exponent: float = 0.9,
    ) -> None:
        self.peak_lr = peak_lr
        self.total_iters = max(1, total_iters)
        self.warmup_iters = max(0, min(warmup_iters, self.total_iters - 1))
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.exponent = exponent
        super().__init__(optimizer, -1)

    def lr_at(self, iteration: int) -> float:
        """The learning rate of iteration ``iteration`` (0-based)."""
        if iteration < self.warmup_iters:
            return self.peak_lr * (iteration + 1) / self.warmup_iters
        span = self.total_iters - self.warmup_iters
        done = min(iteration - self.warmup_iters, span)
        return self.peak_lr * (1.0 - done / span) ** self.exponent

    def set_iteration(self, iteration: int) -> None:
        lr = self.lr_at(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)

    def step(self, epoch: int | None = None) -> None:
        self.set_iteration(0 if epoch is None or epoch < 0 else epoch * self.iters_per_epoch)

    def get_last_lr(self) -> list[float | torch.Tensor]:
        return list(self._last_lr)


def _env_number(name: str, kind: type, default: float | int) -> float | int:
    value = os.environ.get(name)
    return default if value in (None, "") else kind(value)


class nnUNetTrainer_medssl(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming scheme)
    """nnU-Net's trainer with a per-iteration linear lr warm-up (see the module docstring)."""

    default_epochs = 1000
    default_iters = 250
    default_val_iters = 50
    default_warmup = 0.05
    default_save_every = 50

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ) -> None:
        seed = os.environ.get("MEDSSL_FT_SEED")
        if seed not in (None, ""):
            random.seed(int(seed))
            np.random.seed(int(seed))
            torch.manual_seed(int(seed))
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(_env_number("MEDSSL_FT_EPOCHS", int, self.default_epochs))
        self.num_iterations_per_epoch = int(_env_number("MEDSSL_FT_ITERS", int, self.default_iters))
        self.num_val_iterations_per_epoch = int(
            _env_number("MEDSSL_FT_VAL_ITERS", int, self.default_val_iters)
        )
        self.initial_lr = float(_env_number("MEDSSL_FT_LR", float, 1e-2))  # nnU-Net's 1e-2
        self.warmup_fraction = float(_env_number("MEDSSL_FT_WARMUP", float, self.default_warmup))
        # nnU-Net builds the network and the loss from this in initialize()
        self.enable_deep_supervision = bool(_env_number("MEDSSL_FT_DEEP_SUPERVISION", int, 1))
        self.save_every = min(self.default_save_every, self.num_epochs)
        self._iteration = 0

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPolyLR]:
        optimizer = torch.optim.SGD(
            self.network.parameters(),
            self.initial_lr,
            weight_decay=self.weight_decay,
            momentum=0.99,
            nesterov=True,
        )
        total = self.num_epochs * self.num_iterations_per_epoch
        scheduler = WarmupPolyLR(
            optimizer,
            self.initial_lr,
            total,
            round(self.warmup_fraction * total),
            self.num_iterations_per_epoch,
        )
        return optimizer, scheduler

    def on_train_epoch_start(self) -> None:
        self._iteration = self.current_epoch * self.num_iterations_per_epoch
        super().on_train_epoch_start()

    def train_step(self, batch: dict) -> dict:
        self.lr_scheduler.set_iteration(self._iteration)
        self._iteration += 1
        return super().train_step(batch)


class nnUNetTrainer_medsslShort(nnUNetTrainer_medssl):  # noqa: N801
    """A short budget (10 x 25 iterations by default, a checkpoint every epoch) with the same
    warm-up schedule, for tests, CPU demos and the benchmark."""

    default_epochs = 10
    default_iters = 25
    default_val_iters = 5
    default_save_every = 1
