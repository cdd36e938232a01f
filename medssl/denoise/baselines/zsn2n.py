"""Zero-Shot Noise2Noise (ZS-N2N), a single-image baseline.

Mansour & Heckel, "Zero-Shot Noise2Noise: Efficient Image Denoising without any Data",
CVPR 2023. A two-layer CNN predicts the noise; it is trained on the one image with the
pixel-pair downsamplings: a symmetric residual loss between the two half-resolution views and
a consistency loss between denoising-then-downsampling and downsampling-then-denoising.
Written for medssl from the paper's description.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.denoise.filter2noise.sampling import pad_to_even, pair_downsample

__all__ = ["ZSN2N", "zsn2n_denoise"]


class ZSN2N(nn.Module):
    """The ZS-N2N network: ``conv3(1 -> c) -> LReLU -> conv3(c -> c) -> LReLU -> conv1(c -> 1)``;
    it outputs the noise estimate."""

    def __init__(self, channels: int = 48) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, channels, 3, padding=1)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c3 = nn.Conv2d(channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` (the noise)."""
        h = F.leaky_relu(self.c1(x), 0.2)
        h = F.leaky_relu(self.c2(h), 0.2)
        return self.c3(h)


def zsn2n_denoise(image: Tensor, *, steps: int = 2000, lr: float = 1e-3, seed: int = 0) -> Tensor:
    """Denoise one image with ZS-N2N (Adam, lr halved at 75 % of the steps, as in the paper).

    Shape:
        image: ``(H, W)`` in any fixed intensity scale; output the same.
    """
    torch.manual_seed(seed)
    y, _ = pad_to_even(image[None, None].float())
    net = ZSN2N()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(0.75 * steps)), gamma=0.5)
    for _ in range(steps):
        g1, g2 = pair_downsample(y)
        d1 = g1 - net(g1)
        d2 = g2 - net(g2)
        loss_res = 0.5 * (F.mse_loss(d1, g2) + F.mse_loss(d2, g1))
        full = y - net(y)
        f1, f2 = pair_downsample(full)
        loss_cons = 0.5 * (F.mse_loss(d1, f1) + F.mse_loss(d2, f2))
        opt.zero_grad(set_to_none=True)
        (loss_res + loss_cons).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out = y - net(y)
    H, W = image.shape
    return out[0, 0, :H, :W]
