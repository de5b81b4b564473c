"""Preprocessing: raw particle image (+ optional mask) -> model input.

This module is the pure-PyTorch *reference*. The native op
``torch.ops.emclassify.preprocess`` (``csrc/``) implements exactly the same
arithmetic fused into one pass; :func:`emclassify.ops.preprocess` picks one of
the two. Tests use this module as the oracle for the native op.

The steps, per image (H x W pixels, any of uint8 / uint16 / int16 / float):

1. **Region** (``mode``):
   - ``surround``: the whole image (particle + its surrounding).
   - ``crop``: the mask's bounding box when a non-empty mask is given, else the
     image with ``margin`` pixels removed from each side (clamped so at least one
     pixel row/column remains).
   - ``mask``: as ``crop``, and pixels outside the mask are set to the
     *background value* = mean of all image pixels outside the mask (the mean of
     the whole image when the mask covers everything). An empty or missing mask
     gives the plain margin crop: the caller decides what to do about missing
     masks (see :mod:`emclassify.segment`).
2. **Statistics** of the region (float64): mean, std (population), min, max,
   which define an affine map ``y = (x - shift) * scale``:
   - ``zscore``: shift = mean, scale = 1 / max(std, EPS)
   - ``minmax``: shift = min, scale = 1 / max(max - min, EPS)
   - ``fixed``: shift = cfg.mean, scale = 1 / cfg.std
3. **Resize** the shifted region ``x - shift``, aspect kept: the longer side becomes ``size`` pixels, the other
   ``max(1, round(side * size / longer))``. Separable triangle (bilinear) filter
   whose support widens with the downscale factor, i.e. antialiased like PIL's
   ``BILINEAR``; weights per output pixel sum to 1.
4. **Normalise** with the affine map, and **pad** to ``size x size``, the resized
   region centred (top = (size - h') // 2, left = (size - w') // 2). Padding takes
   the normalised region mean (0 for z-score), so it carries no information.

Output: float32 tensor ``N x 1 x size x size``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .defaults import MODES, NORMALIZATIONS  # noqa: E402  (torch-free: the CLI parser reads them)

EPS = 1e-6
# The smallest region (shorter side, px) a particle image may give a model. Real particles go down
# to ~9 px across (NanoShapes' smallest mask boxes), so 8 px admits every real particle while a
# margin crop that leaves a sliver (e.g. 41x41 px minus 50 px per side -> 1x1 px) is refused.
MIN_REGION_SIDE = 8
# Largest model input side a model file may declare: LipNet inputs are 32-128 px; a card declaring
# thousands would make every batch allocate gigabytes.
MAX_INPUT_SIZE = 512

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw images become model inputs; stored in every model card.

    mode: ``surround`` | ``crop`` | ``mask`` (see module docstring).
    size: side of the square model input, pixels.
    margin: pixels removed from each side by ``crop``/``mask`` when there is no mask.
    normalize: ``zscore`` | ``minmax`` | ``fixed``.
    mean, std: used by ``fixed`` only, in raw intensity units.
    """

    mode: str = "surround"
    size: int = 64
    margin: int = 50
    normalize: str = "zscore"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown input mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalisation {self.normalize!r}; choose one of {', '.join(NORMALIZATIONS)}"
            )
        if not (isinstance(self.size, int) and not isinstance(self.size, bool) and 1 <= self.size <= MAX_INPUT_SIZE):
            raise ValueError(f"input size must be an integer in 1..{MAX_INPUT_SIZE} px, got {self.size!r}")
        if not (isinstance(self.margin, int) and not isinstance(self.margin, bool) and 0 <= self.margin <= 10_000):
            raise ValueError(f"margin must be an integer in 0..10000 px, got {self.margin!r}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.normalize == "fixed" and not self.std > 0:
            raise ValueError(f"fixed normalisation needs std > 0, got {self.std!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    @property
    def uses_mask(self) -> bool:
        return self.mode in ("crop", "mask")

    def region_problem(self, height: int, width: int, mask=None) -> Optional[str]:
        """Why an image of ``height x width`` px (with this bool mask, or None) gives no usable region,
        or None when its region is at least :data:`MIN_REGION_SIDE` px on its shorter side."""
        m = to_bool_mask(mask)
        if m is not None and not bool(m.any()):
            m = None
        y0, y1, x0, x1 = region_box(height, width, m, self)
        h, w = y1 - y0, x1 - x0
        if min(h, w) >= MIN_REGION_SIDE:
            return None
        how = ("whole image" if self.mode == "surround" else
               "mask's bounding box" if m is not None else f"image minus the {self.margin} px margin")
        hint = "" if self.mode == "surround" or m is not None else (
            "; images this small need a mask or --mode surround (or a smaller --margin)")
        return (f"the {self.mode} region ({how}) is {w}x{h} px, below the minimum of {MIN_REGION_SIDE} px "
                f"per side: too small to classify{hint}")


def to_float_tensor(image: ArrayLike) -> torch.Tensor:
    """2-D image of any supported dtype -> float32 tensor (values unchanged)."""
    if isinstance(image, torch.Tensor):
        return image.to(torch.float32)
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))


def to_bool_mask(mask: Optional[ArrayLike]) -> Optional[torch.Tensor]:
    """Mask of any dtype -> bool tensor (nonzero = particle), or None."""
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        return mask != 0
    return torch.from_numpy(np.ascontiguousarray(mask) != 0)


def region_box(height: int, width: int, mask: Optional[torch.Tensor], cfg: PreprocessConfig):
    """Return ``(y0, y1, x0, x1)`` (half-open) of the region used for ``cfg.mode``.

    ``mask`` is a bool (H, W) tensor or None; an all-false mask counts as None.
    """
    if cfg.mode == "surround":
        return 0, height, 0, width
    if mask is not None and bool(mask.any()):
        rows = torch.nonzero(mask.any(dim=1)).flatten()
        cols = torch.nonzero(mask.any(dim=0)).flatten()
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    my = min(cfg.margin, (height - 1) // 2)
    mx = min(cfg.margin, (width - 1) // 2)
    return my, height - my, mx, width - mx


def background_value(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of the pixels outside ``mask`` (of the whole image if none are), float64."""
    outside = ~mask
    if bool(outside.any()):
        return float(image.double()[outside].mean())
    return float(image.double().mean())


def affine_for(region: torch.Tensor, cfg: PreprocessConfig):
    """Return ``(shift, scale, region_mean)`` defining ``y = (x - shift) * scale``."""
    r = region.double()
    mean = float(r.mean())
    if cfg.normalize == "zscore":
        std = float(r.std(unbiased=False)) if r.numel() > 1 else 0.0
        return mean, 1.0 / max(std, EPS), mean
    if cfg.normalize == "minmax":
        lo, hi = float(r.min()), float(r.max())
        return lo, 1.0 / max(hi - lo, EPS), mean
    return float(cfg.mean), 1.0 / float(cfg.std), mean


def resized_shape(height: int, width: int, size: int):
    """Aspect-kept output shape whose longer side is ``size``."""
    longer = max(height, width)
    h = max(1, int(math.floor(height * size / longer + 0.5)))
    w = max(1, int(math.floor(width * size / longer + 0.5)))
    return h, w


def resize_weights(n_in: int, n_out: int) -> torch.Tensor:
    """Dense (n_out, n_in) float64 matrix of the antialiased triangle filter.

    Output pixel ``o`` has centre ``(o + 0.5) * n_in / n_out`` in input
    coordinates; input pixel ``i`` (centre ``i + 0.5``) gets weight
    ``max(0, 1 - |i + 0.5 - centre| / support)`` with ``support = max(1, n_in / n_out)``;
    each row is normalised to sum 1.
    """
    scale = n_in / n_out
    support = max(1.0, scale)
    centres = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    pos = torch.arange(n_in, dtype=torch.float64) + 0.5
    w = (1.0 - (pos[None, :] - centres[:, None]).abs() / support).clamp_min(0.0)
    return w / w.sum(dim=1, keepdim=True)


def preprocess_one(image: ArrayLike, mask: Optional[ArrayLike], cfg: PreprocessConfig) -> torch.Tensor:
    """One image (H, W) and optional mask (H, W) -> float32 (size, size)."""
    img = to_float_tensor(image)
    if img.ndim != 2 or img.numel() == 0:
        raise ValueError(f"expected a non-empty 2-D image, got shape {tuple(img.shape)}")
    m = to_bool_mask(mask)
    if m is not None and tuple(m.shape) != tuple(img.shape):
        raise ValueError(f"mask shape {tuple(m.shape)} differs from image shape {tuple(img.shape)}")
    if m is not None and not bool(m.any()):
        m = None  # an empty mask carries no particle: behave as if absent
    H, W = img.shape
    y0, y1, x0, x1 = region_box(H, W, m, cfg)
    region = img[y0:y1, x0:x1].double()
    if cfg.mode == "mask" and m is not None:
        bg = background_value(img, m)
        region = torch.where(m[y0:y1, x0:x1], region, torch.tensor(bg, dtype=torch.float64))
    shift, scale, region_mean = affine_for(region, cfg)

    # float64 throughout: this is the oracle the native op is held to.
    h, w = resized_shape(region.shape[0], region.shape[1], cfg.size)
    wy = resize_weights(region.shape[0], h)
    wx = resize_weights(region.shape[1], w)
    resized = wy @ (region - shift) @ wx.T

    S = cfg.size
    out = torch.full((S, S), float((region_mean - shift) * scale), dtype=torch.float32)
    top, left = (S - h) // 2, (S - w) // 2
    out[top : top + h, left : left + w] = (resized * scale).to(torch.float32)
    return out


def preprocess_reference(
    images: Sequence[ArrayLike],
    masks: Optional[Sequence[Optional[ArrayLike]]],
    cfg: PreprocessConfig,
) -> torch.Tensor:
    """Ragged batch -> float32 ``N x 1 x S x S`` (the reference for the native op)."""
    if masks is None:
        masks = [None] * len(images)
    if len(masks) != len(images):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    out = torch.empty((len(images), 1, cfg.size, cfg.size), dtype=torch.float32)
    for i, (image, mask) in enumerate(zip(images, masks)):
        out[i, 0] = preprocess_one(image, mask, cfg)
    return out
