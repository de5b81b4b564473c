"""The learned finder's network: a small U-Net that maps a micrograph to two per-pixel maps.

Input: float32 ``N x 1 x H x W``, a micrograph normalised by :func:`normalise_micrograph`.
Output: float32 logits ``N x 2 x H x W``: channel 0 is "particle" (foreground), channel 1 the
particle's *centre-ness*, whose sigmoid is trained towards each particle's distance to its own
edge divided by that particle's largest such distance (1 at its centre, near 0 at its rim). Two
touching particles therefore meet in a valley of centre-ness, which is what separates them
(:func:`emclassify.finding.learned.instances_from_maps`).

Built from LipNet's :class:`~emclassify.models.lipnet.ConvBlock` (conv 3x3 -> batch-norm -> ReLU),
so that inference runs the same fused native op (:func:`emclassify.ops.conv_block`, batch-norm
folded) with its pure-PyTorch reference as fallback.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..defaults import FINDER_TRAINING, FINDER_VIEWS
from ..models import d4_views
from ..models.lipnet import ConvBlock

ARCH = "unet-centreness"
DEFAULT_WIDTHS = FINDER_TRAINING["widths"]


def side_multiple(levels: int) -> int:
    """Each level halves the side, so inputs are padded to a multiple of this."""
    return 2 ** (levels - 1)


def _double(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(ConvBlock(c_in, c_out, "same"), ConvBlock(c_out, c_out, "same"))


class FinderNet(nn.Module):
    """U-Net with ``len(widths)`` levels (module doc). widths: channels per level, top first."""

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"a finder U-Net needs at least two levels of positive widths, got {widths}")
        self.widths = widths
        self.down = nn.ModuleList()
        c = 1
        for w in widths:
            self.down.append(_double(c, w))
            c = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(_double(c + w, w))
            c = w
        self.head = nn.Conv2d(c, 2, 1)

    @property
    def multiple(self) -> int:
        return side_multiple(len(self.widths))

    def _run(self, x: torch.Tensor, stage) -> torch.Tensor:
        skips: List[torch.Tensor] = []
        for i, double in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = stage(double, x)
            skips.append(x)
        for double, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(double, torch.cat([x, skip], 1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training path (autograd, batch statistics in train mode). x: N x 1 x H x W, H and W
        multiples of :attr:`multiple`."""
        return self._run(x, lambda double, t: double(t))

    @torch.no_grad()
    def infer(self, x: torch.Tensor, native: Optional[bool] = None) -> torch.Tensor:
        """Inference path: every conv block runs as the fused op with batch-norm folded in
        (native when available, else its reference). Same result as eval-mode ``forward`` to
        float32 rounding."""
        folded = {id(b): b.folded() for double in [*self.down, *self.up] for b in double}

        def stage(double, t):
            for block in double:
                w, b = folded[id(block)]
                t = ops.conv_block(t, w, b, 1, False, native=native)
            return t

        return self._run(x, stage)


def intensity_range(image: np.ndarray, max_samples: int = 1 << 20) -> Optional[Tuple[float, float]]:
    """The 1st and 99th percentiles of a micrograph, from at most ``max_samples`` evenly strided
    pixels (an 8k x 8k micrograph costs no full sort); None for a flat image (nothing to find)."""
    img = np.asarray(image)
    step = max(1, int(np.ceil(np.sqrt(img.size / max_samples))))
    lo, hi = np.percentile(np.asarray(img[::step, ::step], dtype=np.float32), [1, 99])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 1e-12:
        return None
    return float(lo), float(hi)


def normalise_micrograph(image: np.ndarray, max_samples: int = 1 << 20) -> np.ndarray:
    """float32 (H, W): the 1st..99th percentile range (:func:`intensity_range`) mapped to -1..1.
    A flat image gives zeros. Any numeric dtype."""
    img = np.asarray(image)
    bounds = intensity_range(img, max_samples)
    if bounds is None:
        return np.zeros(img.shape, np.float32)
    lo, hi = bounds
    # one float32 array, scaled and cleaned in place: an 8k micrograph's copies cost 268 MB each
    out = np.subtract(img, np.float32((lo + hi) / 2), dtype=np.float32)
    out *= np.float32(2.0 / (hi - lo))
    return np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _tiles(side: int, tile: int, halo: int, multiple: int) -> Iterator[Tuple[int, int, int, int]]:
    """(read start, read stop, keep start, keep stop) along one axis; read starts are multiples of
    ``multiple`` so that every tile pools on the same grid as the whole image would."""
    if tile < 2 * halo + 2 * multiple:
        raise ValueError(f"tile ({tile} px) must exceed twice the halo ({halo} px) by two pooling steps")
    if side <= tile:
        yield 0, side, 0, side
        return
    keep = 0
    while keep < side:
        start = max(0, (keep - halo) // multiple * multiple)
        stop = min(side, start + tile)
        keep_stop = side if stop == side else stop - halo
        yield start, stop, keep, keep_stop
        keep = keep_stop


def _tile_maps(net: FinderNet, t: torch.Tensor, native: Optional[bool], views: int) -> torch.Tensor:
    """Sigmoid maps ``1 x 2 x h x w`` of one padded tile; views=8: the mean over the tile's 8 D4
    views (:func:`~emclassify.models.d4_views`: view i is flipped when i >= 4, then turned i % 4
    quarter turns), each turned back (a micrograph has no preferred orientation, and outlines
    averaged over the views are smoother: BENCHMARKS.md, "The learned finder")."""
    if views == 1:
        return torch.sigmoid(net.infer(t, native=native))
    total = torch.zeros((1, 2, *t.shape[-2:]), device=t.device)
    for i, view in enumerate(d4_views(t)):
        out = torch.rot90(torch.sigmoid(net.infer(view, native=native)), -(i % 4), (2, 3))
        total += out.flip(3) if i >= 4 else out
    return total / 8


def predict_maps(net: FinderNet, image: np.ndarray, tile: int = 768, halo: int = 64,
                 native: Optional[bool] = None, views: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """(foreground probability, centre-ness), float32 (H, W) each, of a normalised micrograph.

    Large micrographs run in overlapping tiles of ``tile`` px (each keeps its centre, dropping
    ``halo`` px of every inner edge, more than the network's reach), so the network's memory is
    bounded by the tile, not the micrograph. views: 1, or 8 to average each tile's maps over its
    rotations and reflections (8 times the time). The network runs on the device its weights are
    on (a finder trained on a GPU is scored there in cross-validation); the maps come back to the CPU.
    """
    if views not in FINDER_VIEWS:
        raise ValueError(f"views must be one of {FINDER_VIEWS}, got {views!r}")
    img = np.asarray(image, dtype=np.float32)
    H, W = img.shape
    m = net.multiple
    device = next(net.parameters()).device
    fg = np.empty((H, W), np.float32)
    centre = np.empty((H, W), np.float32)
    for y0, y1, ky0, ky1 in _tiles(H, tile, halo, m):
        for x0, x1, kx0, kx1 in _tiles(W, tile, halo, m):
            part = img[y0:y1, x0:x1]
            h, w = part.shape
            ph, pw = (-h) % m, (-w) % m
            t = torch.from_numpy(np.ascontiguousarray(part))[None, None].to(device)
            if ph or pw:
                t = F.pad(t, (0, pw, 0, ph), mode="replicate")
            out = _tile_maps(net, t, native, views)[0, :, :h, :w].cpu().numpy()
            fg[ky0:ky1, kx0:kx1] = out[0, ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0]
            centre[ky0:ky1, kx0:kx1] = out[1, ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0]
    return fg, centre
