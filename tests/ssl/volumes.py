"""Small synthetic volumes (32³-ish NIfTI files) for the pretraining tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medssl.io import Volume, write_volume

TINY_CONFIG = {
    "model": {"plans": "tiny", "patch_size": [32, 32, 32]},
    "mae": {"block_size": 8, "mask_ratio": 0.75},
    "data": {"target_spacing": None, "num_workers": 0, "val_samples": 2},
    "train": {
        "steps": 4,
        "batch_size": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "warmup_steps": 1,
        "lr": 1e-3,
        "amp": "off",
        "device": "cpu",
    },
}


def head_phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """An ellipsoid 'head' with a few inner structures and noise on a dark background."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    arr = np.zeros(shape, np.float32)
    arr[(z / 0.8) ** 2 + (y / 0.9) ** 2 + (x / 0.7) ** 2 < 1] = 100
    for _ in range(4):
        c = rng.uniform(-0.4, 0.4, 3)
        r = rng.uniform(0.1, 0.25)
        arr[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r**2] = rng.uniform(150, 300)
    return arr + rng.normal(0, 5, shape).astype(np.float32)


def write_collection(folder: Path, n: int = 3, shape=(36, 40, 34), seed: int = 0) -> Path:
    """``n`` phantom volumes (NIfTI) plus a label map that discovery must leave out."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        vol = Volume(head_phantom(shape, seed + i), spacing=(1.5, 1.2, 1.2), modality="MR")
        write_volume(vol, folder / f"case{i}.nii.gz")
    label = Volume((head_phantom(shape, 99) > 120).astype(np.float32), spacing=(1.5, 1.2, 1.2))
    write_volume(label, folder / "case0_label.nii.gz")
    return folder
