"""The LDCT benchmark's cases: real CT slices with simulated low-dose versions (cached).

Cases (all from the real CT of docs/data.md; fetched with `medssl data fetch`):

* ``lung1_z{8,16,24,32,40}``: five slices of the lung1 chest CT, 512x512, 0.57 mm;
* ``lung1_z*_256``: the same slices resampled to 256x256 (area averaging), 1.14 mm;
* ``chest_dicompyler``: the dicompyler-core chest slice, 512x512, 1.07 mm;
* ``neck_pydicom``: the pydicom-data neck slice, 512x512, 0.287 mm (JPEG lossless);
* ``ct_small``: pydicom's CT_small, 128x128, 0.66 mm.

Low dose is simulated in the sinogram domain (``medssl.data.ldct``) at I0 = 1e5 and 2.5e4
with a fixed seed per case and dose; the noiseless projection and the reference are computed
once and cached in ``$MEDSSL_DATA/ldct`` (default ``~/.cache/medssl/ldct``).

Reconstruction kernels (``medssl.data.ldct.KERNELS``): ``ramp`` unless asked. The noiseless
projection is shared by all kernels, and the noise draw (the seed) is the same for every kernel
of a case and dose, so two kernels differ by the filter only. Cache files: ``{name}_clean.npz``
(projection and ramp reference) and ``{name}_{dose}.npz`` for the ramp kernel (the names the
cache had before kernels), ``{name}_clean_{kernel}.npz`` (reference) and
``{name}_{dose}_{kernel}.npz`` for the others.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.data import cache_root, fetch
from medssl.data.ldct import KERNELS, _square, project, reference_image, simulate_low_dose
from medssl.io import read_volume

LUNG_Z = (8, 16, 24, 32, 40)
DOSES = {"normal": 1e5, "quarter": 2.5e4}


@dataclass
class Case:
    name: str
    size: int
    pixel_mm: float
    dose: str
    noisy: np.ndarray  # (H, W) HU
    reference: np.ndarray  # (H, W) HU, same kernel
    kernel: str = "ramp"


def _slices() -> dict[str, tuple[np.ndarray, float]]:
    from skimage.transform import resize

    out: dict[str, tuple[np.ndarray, float]] = {}
    lung = read_volume(fetch("lung1"))
    px = float(lung.spacing[2])
    for z in LUNG_Z:
        sl = lung.array[z].astype(np.float64)
        out[f"lung1_z{z}"] = (sl, px)
        small = resize(sl, (256, 256), order=1, anti_aliasing=True, preserve_range=True)
        out[f"lung1_z{z}_256"] = (small, px * 2)
    for name, sample in (
        ("chest_dicompyler", "chest_ct"),
        ("neck_pydicom", "neck_ct"),
        ("ct_small", "ct_small"),
    ):
        v = read_volume(fetch(sample))
        out[name] = (v.array[0].astype(np.float64), float(v.spacing[2]))
    return out


def _seed(name: str, dose: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{name}/{dose}".encode()).digest()[:4], "big")


def _save(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` under a temporary name, then rename (another process may read it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def _suffix(kernel: str) -> str:
    return "" if kernel == "ramp" else f"_{kernel}"


def load_cases(
    doses: tuple[str, ...] = ("normal", "quarter"),
    names: tuple[str, ...] | None = None,
    kernels: tuple[str, ...] = ("ramp",),
) -> list[Case]:
    """All benchmark cases (simulated on first use, then read from the cache), ordered by
    slice, then kernel, then dose."""
    for kernel in kernels:
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    cache = cache_root() / "ldct"
    cache.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, (hu, px) in _slices().items():
        if names is not None and name not in names:
            continue
        clean_path = cache / f"{name}_clean.npz"
        if clean_path.exists():
            clean = np.load(clean_path)
            p, ramp_ref = clean["projection"], clean["reference"]
        else:
            square, _ = _square(hu)
            p = project(square, px)
            ramp_ref = reference_image(hu, px, clean_projection=p)
            _save(clean_path, projection=p, reference=ramp_ref)
        for kernel in kernels:
            ref = ramp_ref
            if kernel != "ramp":
                ref_path = cache / f"{name}_clean{_suffix(kernel)}.npz"
                if ref_path.exists():
                    ref = np.load(ref_path)["reference"]
                else:
                    ref = reference_image(hu, px, clean_projection=p, kernel=kernel)
                    _save(ref_path, reference=ref)
            for dose in doses:
                path = cache / f"{name}_{dose}{_suffix(kernel)}.npz"
                if path.exists():
                    noisy = np.load(path)["noisy"]
                else:
                    pair = simulate_low_dose(
                        hu,
                        px,
                        DOSES[dose],
                        _seed(name, dose),
                        clean_projection=p,
                        reference=ref,
                        kernel=kernel,
                    )
                    noisy = pair.noisy
                    _save(path, noisy=noisy)
                cases.append(
                    Case(
                        name,
                        hu.shape[0],
                        px,
                        dose,
                        noisy,
                        np.asarray(ref, dtype=np.float32),
                        kernel,
                    )
                )
    return cases
