"""Sigma maps as images: NIfTI volumes on the scan's grid and PNG overlays.

For each stage ``k``: ``stage{k}_sigma_{z,y,x}_mm.nii.gz`` (spatial sigmas converted from
pixels to millimetres with the voxel spacing) and ``stage{k}_sigma_range_hu.nii.gz`` (range
sigma in HU), plus ``stage{k}_overlay.png``: the central slice with each map over it. A
non-local means stage (``final_filter = "nlm"``) writes its patch-distance scale as
``stage{k}_nlm_h_hu.nii.gz`` instead of a range sigma.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medssl.io import OWNER_MARKER, Volume, atomic_dir, atomic_file, write_volume
from medssl.transforms.windows import SOFT_TISSUE

__all__ = ["save_sigma_maps"]


def _overlay_png(image: np.ndarray, maps: list[tuple[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(4 * (len(maps) + 1), 4.4))
    axes[0].imshow(image, cmap="gray", vmin=SOFT_TISSUE.low, vmax=SOFT_TISSUE.high)
    axes[0].set_title(f"input ({SOFT_TISSUE.label()})")
    for ax, (title, m) in zip(axes[1:], maps, strict=True):
        ax.imshow(image, cmap="gray", vmin=SOFT_TISSUE.low, vmax=SOFT_TISSUE.high)
        im = ax.imshow(m, cmap="magma", alpha=0.65)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def save_sigma_maps(
    sigma_maps: list[np.ndarray],
    volume: Volume,
    out_dir: str | Path,
    *,
    overwrite: bool = True,
    guides: Sequence[float] | None = None,
    kinds: Sequence[str] | None = None,
    noise_model: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write the sigma maps of a denoising run.

    Args:
        sigma_maps: Per stage ``(Z, nd + 1, Y, X)``: spatial sigmas (voxels, tensor axis order)
            then the range sigma (HU), as in :class:`~medssl.denoise.filter2noise.DenoiseResult`.
        volume: The input volume (grid and the image for the overlays).
        out_dir: Output folder (created).
        guides: Per stage, the guide's Gaussian sigma in pixels (0: none); a guided stage's
            range panel says its sigma applies to the smoothed guide.
        kinds: Per stage, ``"bilateral"`` (default) or ``"nlm"``: an NLM stage's last map is
            its patch-distance scale h (HU), written as ``stage{k}_nlm_h_hu.nii.gz``.
        noise_model: The scan's noise model summary (``NoiseModel.to_dict()``), written as
            ``noise_model.json`` beside the maps.

    Returns:
        The written files.
    """
    final = Path(out_dir)
    written: list[Path] = []
    # the folder appears whole (with medssl's marker) or not at all; only a folder medssl
    # made is replaced
    with atomic_dir(final, overwrite=overwrite) as out:
        (out / OWNER_MARKER).write_text('{"made_by": "medssl", "kind": "sigma-maps"}\n')
        if noise_model is not None:
            path = out / "noise_model.json"
            path.write_text(json.dumps(dict(noise_model), indent=2) + "\n")
            written.append(path)
        zc = volume.shape[0] // 2
        for k, maps in enumerate(sigma_maps):
            nd = maps.shape[1] - 1
            axes = ("z", "y", "x")[3 - nd :]
            spacing = volume.spacing[3 - nd :]
            panels = []
            for a, (name, dx) in enumerate(zip(axes, spacing, strict=True)):
                mm = maps[:, a] * dx
                path = out / f"stage{k}_sigma_{name}_mm.nii.gz"
                written.append(write_volume(volume.with_array(mm), path, overwrite=overwrite))
                panels.append((f"stage {k}: sigma_{name} (mm)", mm[zc]))
            rng = maps[:, nd]
            nlm = kinds is not None and kinds[k] == "nlm"
            name = "nlm_h" if nlm else "sigma_range"
            path = out / f"stage{k}_{name}_hu.nii.gz"
            written.append(write_volume(volume.with_array(rng), path, overwrite=overwrite))
            guide = float(guides[k]) if guides is not None else 0.0
            on = f", {guide:g}-px guide" if guide > 0 else ""
            title = "NLM h, RMS patch difference (HU)" if nlm else f"sigma_range (HU{on})"
            panels.append((f"stage {k}: {title}", rng[zc]))
            png = out / f"stage{k}_overlay.png"
            _overlay_png(volume.array[zc], panels, png)
            written.append(png)
    return [final / p.name for p in written]
