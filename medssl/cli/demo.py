"""`medssl demo`: the README's main job on real sample data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from medssl.cli._console import out
from medssl.cli.info import _volume_table
from medssl.data import SAMPLES, fetch
from medssl.io import Volume, atomic_file, claim_folder, read_volume, write_volume
from medssl.transforms.windows import SOFT_TISSUE

__all__ = ["demo"]


def demo(
    output: Path = typer.Option(
        Path("demo_output"), "--output", "-o", help="Folder for the demo's outputs."
    ),
) -> None:
    """Denoise the lung1 chest CT sample (fetched on first use) with Filter2Noise.

    1. describes the scan; 2. denoises all its slices with the default settings (the model is
    fitted on the scan itself), writing a NIfTI image, a derived DICOM series and the sigma
    maps; 3. measures the effect on one slice with a simulated quarter dose against its
    noiseless reference, and writes a comparison figure.
    """
    from medssl.cli.denoise import denoise_and_print
    from medssl.denoise.settings import DenoiseSettings

    t0 = time.perf_counter()
    out.rule("1. fetch the lung1 chest CT sample")
    src = fetch("lung1")
    out.print(str(src))
    out.print(SAMPLES["lung1"].attribution, style="dim")
    volume = read_volume(src)
    out.print(_volume_table(src, volume))
    claim_folder(output, "demo")  # a new, empty or earlier demo folder: never a user's

    out.rule("2. medssl denoise lung1 (fit on the scan, apply to every slice)")
    nifti = output / "lung1_denoised.nii.gz"
    out.print(f"medssl denoise {src} -o {nifti} --sigma-maps {output / 'sigma_maps'}")
    # the library entry point with the command's defaults and console account
    denoise_and_print(
        src, nifti, DenoiseSettings(), sigma_maps=output / "sigma_maps", overwrite=True
    )
    dicom_dir = output / "lung1_denoised_dicom"
    denoised = read_volume(nifti)
    write_volume(
        denoised,
        dicom_dir,
        overwrite=True,
        modality="CT",
        settings={"operation": "demo"},
        derivation="medssl demo: Filter2Noise denoising",
        series_description="lung1 Filter2Noise medssl demo",
    )
    back = read_volume(dicom_dir)
    if not back.same_grid(volume) or float(np.max(np.abs(back.array - denoised.array))) > 0.5:
        raise RuntimeError("the derived DICOM series does not match the denoised image")
    out.print(f"wrote the derived DICOM series {dicom_dir} (read back: same grid and HU)")

    out.rule("3. simulated quarter dose on slice 24 against its noiseless reference")
    _quarter_dose_check(volume, output)

    out.rule("4. medssl pretrain --method s3d (a 10-step CPU taste) and export for nnU-Net")
    _pretrain_taste(output)
    out.rule(f"done in {time.perf_counter() - t0:.1f} s; outputs in {output}")


def _pretrain_taste(output: Path) -> None:
    """S3D-pretrain the small ResEnc U-Net for 10 steps on three real MR volumes, export it for
    nnU-Net and load the export with nnU-Net's own loader (a pipeline check, not a useful
    pretraining: see configs/ and benchmarks/pretrain for real runs)."""
    import shutil

    from medssl.finetune.nnunet import export_nnunet, read_export
    from medssl.ssl.pretrain import pretrain

    names = ("brain1", "brain2", "itk_t1")
    volumes = [fetch(n) for n in names]
    out.print(f"volumes: {', '.join(names)} (MR; {SAMPLES['itk_t1'].attribution}; "
              f"{SAMPLES['brain1'].attribution})", style="dim")  # fmt: skip
    run = output / "pretrain_s3d"
    shutil.rmtree(run, ignore_errors=True)  # the demo's own folder: start it afresh
    config = {
        "model": {"plans": "small", "patch_size": [64, 64, 64]},
        "data": {"target_spacing": [1.5, 1.5, 1.5], "num_workers": 1},
        "train": {"steps": 10, "lr": 1e-3, "warmup_steps": 2, "log_every": 5},
    }
    out.print(f"medssl pretrain --method s3d -d {' -d '.join(map(str, volumes))} -o {run}")
    result = pretrain("s3d", volumes, run, config=config)
    weights = export_nnunet(result.checkpoint, run / "nnunet_pretrained.pth", overwrite=True)
    out.print(f"medssl export-nnunet {result.checkpoint} -o {weights}")
    state, meta = read_export(weights)

    import contextlib
    import io

    import torch
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(meta["plans"])
    network = nnUNetTrainer.build_network_architecture(
        plans, plans.get_configuration(meta["configuration"]), 1, 3, True
    )
    with contextlib.redirect_stdout(io.StringIO()):
        load_pretrained_weights(network, str(weights))
    loaded = network.state_dict()
    if any(not torch.equal(loaded[k], state[k]) for k in meta["pretrained_keys"]):
        raise RuntimeError("nnU-Net did not load the exported weights unchanged")
    out.print(
        f"nnU-Net's load_pretrained_weights took all {len(meta['pretrained_keys'])} "
        f"pretrained tensors into the network it builds from the plans (3 classes, deep "
        f"supervision); loss after 10 steps {result.last_loss:.3f}"
    )


def _quarter_dose_check(volume: Volume, output: Path, z: int = 24) -> None:
    """Simulate a quarter dose of one slice (sinogram domain, docs/data.md), denoise it and report
    PSNR against the noiseless reconstruction; writes ``quarter_dose_z{z}.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medssl.data.ldct import simulate_low_dose
    from medssl.denoise.baselines.gaussian import gaussian_denoise
    from medssl.denoise.filter2noise import denoise_volume
    from medssl.denoise.metrics import psnr, ssim

    px = float(volume.spacing[2])
    pair = simulate_low_dose(volume.array[z].astype(np.float64), px, 2.5e4, seed=z)
    noisy = Volume(pair.noisy[None].astype(np.float32), spacing=(1.0, px, px))
    den = denoise_volume(noisy, seed=0).volume.array[0]
    gauss = gaussian_denoise(pair.noisy, 1.0)
    rows = [("quarter dose", pair.noisy), ("Gaussian, 1 px", gauss), ("medssl Filter2Noise", den)]
    for name, img in rows:
        out.print(
            f"{name:>22}: PSNR {psnr(img, pair.reference):6.2f} dB  "
            f"SSIM {ssim(img, pair.reference):.4f}"
        )
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, (name, img) in zip(axes, [*rows, ("reference", pair.reference)], strict=True):
        ax.imshow(img, cmap="gray", vmin=SOFT_TISSUE.low, vmax=SOFT_TISSUE.high)
        ax.set_title(name)
        ax.axis("off")
    fig.tight_layout()
    path = output / f"quarter_dose_z{z}.png"
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=60, format="png")
    plt.close(fig)
    out.print(f"wrote {path}")
