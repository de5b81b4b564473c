"""Thin wrappers over the native ops, each with its pure-PyTorch reference.

``preprocess`` runs ``torch.ops.emclassify.preprocess`` when the native library
is loaded (and ``EMCLASSIFY_NATIVE`` is not 0), else
:func:`emclassify.preprocess.preprocess_reference`. Both give the same result
to float32 rounding; the tests hold the native op to the reference.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ._native import native_available
from .preprocess import ArrayLike, PreprocessConfig, preprocess_reference, to_bool_mask

_NATIVE_DTYPES = (torch.uint8, torch.uint16, torch.float32)


def _as_image_tensor(image: ArrayLike) -> torch.Tensor:
    t = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    return t if t.dtype in _NATIVE_DTYPES else t.to(torch.float32)


def preprocess(
    images: Sequence[ArrayLike],
    masks: Optional[Sequence[Optional[ArrayLike]]],
    cfg: PreprocessConfig,
    native: Optional[bool] = None,
) -> torch.Tensor:
    """Ragged batch of 2-D images (+ optional masks) -> float32 ``N x 1 x S x S`` on the CPU.

    images: uint8 / uint16 / float arrays or tensors, any sizes.
    masks: None, or one entry per image (None or a same-shape array; nonzero = particle).
    native: force (True) or forbid (False) the native op; None = use it when available.
    """
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    use_native = native_available() if native is None else native
    if not use_native or len(images) == 0:
        return preprocess_reference(images, masks, cfg)
    imgs = [_as_image_tensor(im) for im in images]
    msks = [to_bool_mask(m) for m in masks] if masks is not None else [None] * len(imgs)
    return torch.ops.emclassify.preprocess(
        imgs, msks, cfg.mode, cfg.size, cfg.margin, cfg.normalize, float(cfg.mean), float(cfg.std)
    )
