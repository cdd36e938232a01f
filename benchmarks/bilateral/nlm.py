"""The NLM stage's compiled CPU kernel against its torch loops (the fallback and test oracle).

Shapes as Filter2Noise uses them: one fit step (the two crop batches of a 512² slice, 8 x 64²
and 4 x 128², forward and backward with gradients to the image and the three maps), and the
apply pass on a whole 512² slice and on 16 slices (forward only). Radius 4, 1-px patches
(the ``nlm`` preset). The two implementations alternate, median of ``--repeats`` timed runs
after a warm-up, in one process with ``--threads`` threads.

    python benchmarks/bilateral/nlm.py [--threads 2] [--repeats 5] [--out RESULTS.md]

With ``--out`` the table is appended to that file as a section.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from medssl.denoise.filter2noise.nlm import kernel_available, nonlocal_means

RADIUS = 4
PATCH_SIGMA = 1.0


def _problem(shape: tuple[int, ...], grad: bool, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 40.0 * torch.randn(shape, generator=gen)
    sy, sx = (0.5 + 1.5 * torch.rand(shape, generator=gen) for _ in range(2))
    h = 10.0 + 40.0 * torch.rand(shape, generator=gen)
    return [t.requires_grad_(grad) for t in (x, sy, sx, h)]


def _run(batches: list[list[torch.Tensor]], kernel: bool, grad: bool) -> float:
    t0 = time.perf_counter()
    for x, sy, sx, h in batches:
        if grad:
            y = nonlocal_means(x, (sy, sx), h, RADIUS, PATCH_SIGMA, kernel=kernel)
            torch.autograd.grad(y.square().sum(), [x, sy, sx, h])
        else:
            with torch.no_grad():
                nonlocal_means(x, (sy, sx), h, RADIUS, PATCH_SIGMA, kernel=kernel)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not kernel_available():
        raise SystemExit("the compiled NLM kernel is not loaded (see `medssl ops info`)")
    torch.set_num_threads(args.threads)
    configs = {
        "fit step: 8 x 64² + 4 x 128², fwd+bwd": (
            [_problem((8, 1, 64, 64), True), _problem((4, 1, 128, 128), True)],
            True,
        ),
        "apply: 1 x 512², fwd": ([_problem((1, 1, 512, 512), False)], False),
        "apply: 16 x 512², fwd": ([_problem((16, 1, 512, 512), False)], False),
    }
    lines = [
        f"## NLM stage: compiled kernel against the torch loops (`python "
        f"benchmarks/bilateral/nlm.py --threads {args.threads} --repeats {args.repeats}`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}; date: {time.strftime('%Y-%m-%d')}. "
        f"Radius {RADIUS}, patch sigma {PATCH_SIGMA} px, median of {args.repeats} alternated runs.",
        "",
        "| config | torch loops (s) | kernel (s) | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name, (batches, grad) in configs.items():
        for kernel in (False, True):  # warm-up
            _run(batches, kernel, grad)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for kernel in (False, True):
                times[kernel].append(_run(batches, kernel, grad))
        loops, kern = statistics.median(times[False]), statistics.median(times[True])
        lines.append(f"| {name} | {loops:.3f} | {kern:.3f} | {loops / kern:.2f}x |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        with args.out.open("a") as f:
            f.write("\n" + text)
    print(text)


if __name__ == "__main__":
    main()
