"""Forward + backward time of the CPU kernel for one and two channels (the joint bilateral
filter runs the kernel on an image and its guide: two channels).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bilateral/channels.py

Batch 4 x 128 x 128 (the Filter2Noise fit's crops), radius 6, per-pixel sigma maps, one
thread, mean of 5 calls after one warm-up round.
"""

from __future__ import annotations

import time

import torch

from medssl.ops import bilateral_filter, set_backend


def main() -> None:
    set_backend("cpu")
    torch.manual_seed(0)
    for channels in (1, 2):
        x = torch.randn(4, channels, 128, 128, requires_grad=True)
        sig = [torch.full((4, 1, 128, 128), 1.5, requires_grad=True) for _ in range(2)]
        sr = torch.full((4, 1, 128, 128), 0.5, requires_grad=True)
        for rep in range(2):
            t0 = time.perf_counter()
            for _ in range(5):
                bilateral_filter(x, sig, sr, 6).sum().backward()
            if rep:
                print(f"C={channels}: {(time.perf_counter() - t0) / 5:.4f} s per forward+backward")


if __name__ == "__main__":
    main()
