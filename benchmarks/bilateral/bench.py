"""Bilateral filter benchmark: forward+backward time and peak extra memory.

Implementations:

* ``medssl-cpp``: medssl's C++ CPU kernel (``MEDSSL_BILATERAL_BACKEND=cpu``);
* ``medssl-ref``: medssl's PyTorch reference (tap loop, autograd backward);
* ``unfold``: an ``unfold``-based filter with per-pixel sigma maps, the way the published
  Filter2Noise code filters (written here for the benchmark);
* ``kornia``: ``kornia.filters.bilateral_blur`` (2D only, one sigma per image,
  ``color_distance_type='l2'``);
* ``medssl-cuda``: medssl's CUDA kernel, where a GPU is present.

Every measurement runs in a fresh subprocess: inputs are allocated, one untimed warm-up pass
runs, then the timed passes. Time is the median of the timed passes (forward + backward to the
input and to every sigma, with per-pixel sigma maps where the implementation supports them).
Peak extra memory is the peak resident-set growth of one forward+backward pass over the
state after the warm-up, minus the output and the returned gradients (Linux ``VmHWM`` reset
through ``/proc/self/clear_refs``; ``MALLOC_MMAP_THRESHOLD_=65536`` makes freed buffers leave
the process so that the peak is the true high-water mark); on a GPU, the CUDA allocator's peak.
It is reported in MiB and as a multiple of the input's size.

Usage: ``python benchmarks/bilateral/bench.py [--quick] [--out RESULTS.md]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

CONFIGS = [
    # name, shape, radius
    ("2D 4x1x512x512 r=2", (4, 1, 512, 512), 2),
    ("2D 4x1x512x512 r=4", (4, 1, 512, 512), 4),
    ("2D 4x1x512x512 r=6 (Filter2Noise, sigma_max 3)", (4, 1, 512, 512), 6),
    ("2D 4x1x512x512 r=7", (4, 1, 512, 512), 7),
    ("3D 1x1x128^3 r=2", (1, 1, 128, 128, 128), 2),
    ("3D 1x1x128^3 r=3", (1, 1, 128, 128, 128), 3),
]
IMPLS = ["medssl-cpp", "unfold", "kornia", "medssl-ref", "medssl-cuda"]
MEM_LIMIT_BYTES = 18 * 2**30  # skip runs predicted to need more (24 GB machine)

CHILD = Path(__file__).with_name("child.py")


def predicted_bytes(impl: str, shape: tuple[int, ...], radius: int) -> int:
    n = 1
    for s in shape:
        n *= s
    taps = (2 * radius + 1) ** (len(shape) - 2)
    if impl in ("unfold", "kornia"):
        return 4 * n * taps * 6  # several (N x taps) tensors live in the backward
    if impl == "medssl-ref":
        return 4 * n * taps * 4  # autograd keeps each tap's intermediates
    return 4 * n * 8


def measure(impl: str, shape: tuple[int, ...], radius: int, repeats: int) -> dict:
    device = "cuda" if impl == "medssl-cuda" else "cpu"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(CHILD), impl, json.dumps(shape), str(radius), str(repeats), device],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if proc.returncode < 0:
        return {"error": f"killed by signal {-proc.returncode} (out of memory)"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first and last 2D config only")
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    parser.add_argument("--impls", default=",".join(IMPLS))
    args = parser.parse_args()
    import torch

    has_gpu = torch.cuda.is_available()
    configs = [CONFIGS[1], CONFIGS[3]] if args.quick else CONFIGS
    impls = [i for i in args.impls.split(",") if i]
    rows = []
    for name, shape, radius in configs:
        results = {}
        for impl in impls:
            if impl == "medssl-cuda" and not has_gpu:
                results[impl] = {"skip": "no GPU"}
                continue
            if impl == "kornia" and len(shape) != 4:
                results[impl] = {"skip": "2D only"}
                continue
            if predicted_bytes(impl, shape, radius) > MEM_LIMIT_BYTES:
                results[impl] = {"skip": "needs > 18 GiB"}
                continue
            slow = impl in ("unfold", "kornia", "medssl-ref")
            t0 = time.perf_counter()
            results[impl] = measure(impl, shape, radius, repeats=2 if slow else 5)
            print(
                f"{name:48s} {impl:12s} {json.dumps(results[impl])[:140]} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        rows.append((name, shape, radius, results))

    lines = [
        "| config | implementation | fwd+bwd time (s) | speed-up vs unfold | "
        "peak extra memory (MiB) | extra / input size |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, _shape, _radius, results in rows:
        base = results.get("unfold", {}).get("time")
        for impl, r in results.items():
            if "skip" in r or "error" in r:
                lines.append(
                    f"| {name} | {impl} | {r.get('skip') or 'error: ' + r['error'][:60]} | | | |"
                )
                continue
            speed = f"{base / r['time']:.1f}x" if base else ""
            mib = r["peak_extra"] / 2**20
            ratio = r["peak_extra"] / r["input_bytes"]
            lines.append(
                f"| {name} | {impl} | {r['time']:.3f} | {speed} | {mib:.0f} | {ratio:.2f} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.out:
        machine = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
        gpu = torch.cuda.get_device_name() if has_gpu else "none"
        header = (
            f"Machine: {machine}; GPU: {gpu}; date: {date.today().isoformat()}.\n"
            f"Command: `python benchmarks/bilateral/bench.py{' --quick' if args.quick else ''}"
            f" --out {args.out}`\n\n"
        )
        args.out.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
