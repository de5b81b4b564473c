"""Training-time augmentation as batched tensor ops on preprocessed inputs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Rotate (radians) and scale each sample about its centre; outside pixels take ``fill``."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def augment(x: torch.Tensor, gen: torch.Generator, strong: bool = False) -> torch.Tensor:
    """Per-sample flips, 90° rotations, small rotation (±15°) and scale (0.9–1.1), intensity gain/offset, noise.

    ``strong``: any-angle rotation and scale 0.8–1.2 (used to make synthetic minority samples).
    x: float32 ``N x 1 x S x S`` (normalised, so background/padding is ~0).
    """
    n = x.shape[0]
    out = x.clone()
    k = torch.randint(0, 4, (n,), generator=gen)
    for r in (1, 2, 3):
        sel = k == r
        if sel.any():
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    max_angle = math.pi if strong else math.radians(15)
    spread = 0.2 if strong else 0.1
    angle = (2 * torch.rand(n, generator=gen) - 1) * max_angle
    scale = 1 + spread * (2 * torch.rand(n, generator=gen) - 1)
    out = _affine(out, angle, scale)
    gain = 1 + 0.1 * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    offset = 0.1 * torch.randn(n, 1, 1, 1, generator=gen)
    noise = 0.05 * torch.randn(out.shape, generator=gen)
    return out * gain + offset + noise
