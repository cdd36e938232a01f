"""One measurement of bench.py, run in its own process (see bench.py for the method).

Usage: ``child.py IMPL SHAPE_JSON RADIUS REPEATS DEVICE``; prints one JSON line.
"""

import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

impl, device = sys.argv[1], sys.argv[5]
shape = tuple(json.loads(sys.argv[2]))
radius, repeats = int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
nd = len(shape) - 2
B, C, *S = shape


def unfold_filter(x, sig, sr, r):
    """Per-pixel-sigma bilateral filter through unfold (memory O(N * taps))."""
    k = 2 * r + 1
    if nd == 2:
        xp = F.pad(x, (r, r, r, r), mode="reflect")
        patches = F.unfold(xp, k).view(B, C, k * k, *S)
        g = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
        offs = torch.stack(g, 0).view(2, k * k, 1, 1).to(x)
    else:
        xp = F.pad(x, (r,) * 6, mode="reflect")
        patches = xp.unfold(2, k, 1).unfold(3, k, 1).unfold(4, k, 1)
        patches = patches.reshape(B, C, *S, k**3).movedim(-1, 2)
        g = torch.meshgrid(*(torch.arange(-r, r + 1),) * 3, indexing="ij")
        offs = torch.stack(g, 0).view(3, k**3, 1, 1, 1).to(x)
    logw = -((x.unsqueeze(2) - patches) ** 2).sum(1) / (2 * sr**2)
    for a in range(nd):
        logw = logw - offs[a] ** 2 / (2 * sig[a] ** 2)
    w = torch.exp(logw)  # (B, taps, *S)
    return (w.unsqueeze(1) * patches).sum(2) / w.sum(1, keepdim=True)


if impl.startswith("medssl"):
    backends = {"medssl-cpp": "cpu", "medssl-ref": "reference", "medssl-cuda": "cuda"}
    os.environ["MEDSSL_BILATERAL_BACKEND"] = backends[impl]
    from medssl.ops import bilateral_filter
    from medssl.ops.bilateral import loader

    if impl == "medssl-cpp":
        assert loader.status().cpu, loader.status().cpu_problem
if impl == "kornia":
    import kornia

dev = torch.device(device)
x = torch.randn(shape, device=dev).mul_(0.2).add_(0.5).requires_grad_()
sig_shape = (B, 1, *S)
if impl == "kornia":
    sig = torch.full((B, 2), 2.0, device=dev, requires_grad=True)
    sr = torch.full((B,), 0.1, device=dev, requires_grad=True)
else:
    sig = [torch.full(sig_shape, 2.0, device=dev).requires_grad_() for _ in range(nd)]
    sr = torch.full(sig_shape, 0.1, device=dev).requires_grad_()
gout = torch.randn(shape, device=dev)
leaves = [x, sr, *(sig if isinstance(sig, list) else [sig])]


def run():
    if impl == "unfold":
        out = unfold_filter(x, sig, sr, radius)
    elif impl == "kornia":
        out = kornia.filters.bilateral_blur(
            x, 2 * radius + 1, sr, sig, border_type="reflect", color_distance_type="l2"
        )
    else:
        out = bilateral_filter(x, sig, sr, radius)
    grads = torch.autograd.grad(out, leaves, gout)
    return out, grads


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


out, grads = run()  # warm-up
kept = out.numel() * out.element_size() + sum(g.numel() * g.element_size() for g in grads)
del out, grads
sync()
times = []
peak = None
for i in range(repeats):
    if i == 0:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = rss_kib("VmRSS") * 1024
    sync()
    t = time.perf_counter()
    out, grads = run()
    sync()
    times.append(time.perf_counter() - t)
    if i == 0:
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base - kept
        else:
            peak = rss_kib("VmHWM") * 1024 - base - kept
    del out, grads
print(
    json.dumps(
        {
            "time": statistics.median(times),
            "times": times,
            "peak_extra": peak,
            "input_bytes": x.numel() * x.element_size(),
            "threads": torch.get_num_threads(),
        }
    )
)
