"""C++ CPU kernel time against the range sigma: small range sigmas must not be slower.

With a range sigma of a few HU (the noise of a standard-dose scan, where Filter2Noise sets its
initial range sigma), most taps' weights are below 1e-30. Such weights used to produce denormal
floats, which x86 handles ~13x slower; the kernel now sets weights under exp(-70) to 0.

Usage: ``python benchmarks/bilateral/range_sigma.py`` (prints a Markdown table; 2 threads)
"""

from __future__ import annotations

import time

import numpy as np
import torch

from medssl.data import fetch
from medssl.io import read_volume
from medssl.ops import bilateral_filter


def fwd_bwd_seconds(x: torch.Tensor, sigma_r: float, repeats: int = 5) -> float:
    """Median fwd+bwd time of the 2D filter (radius 6, sigma 1 px) with one range sigma."""
    times = []
    for _ in range(repeats + 1):
        xs = x.clone().requires_grad_()
        t0 = time.perf_counter()
        bilateral_filter(xs, (1.0, 1.0), sigma_r, 6).sum().backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def main() -> None:
    torch.set_num_threads(2)
    lung = read_volume(fetch("lung1"))
    slices = torch.from_numpy(lung.array[20:24, None].copy()) / 1000.0  # 4x1x512^2, HU/1000
    rows = [("lung1 slices 20-23, 4x1x512², HU / 1000", slices)]
    gen = torch.Generator().manual_seed(0)
    rows.append(
        ("Gaussian noise, std 50 HU, 4x1x128²", torch.randn(4, 1, 128, 128, generator=gen) * 0.05)
    )
    print("| input | range sigma (HU) | fwd+bwd (s) | vs 200 HU |")
    print("|---|---|---|---|")
    for name, x in rows:
        ref = None
        for hu in (200.0, 50.0, 10.0, 4.0, 0.4):
            s = fwd_bwd_seconds(x, hu / 1000.0)
            ref = ref or s
            print(f"| {name} | {hu:g} | {s:.4f} | {s / ref:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
