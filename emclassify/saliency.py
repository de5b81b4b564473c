"""Saliency: which pixels drove a CNN's decision, in the original image's coordinates.

:func:`saliency_map` backpropagates the predicted class's logit to the model
input (gradient x input, absolute value, lightly smoothed), then maps the
``S x S`` input back onto the source image: the padded canvas is cropped to the
resized region, resized to the region's size and placed at the region's box
(the crop/mask region of :mod:`emclassify.preprocess`). Pixels outside the
region get 0. Result: float32 ``H x W`` in [0, 1]. Not available for the SVM
(no pixel input): returns None.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import ops
from .features import particle_features
from .models import forward
from .preprocess import region_box, resized_shape, to_bool_mask


def saliency_map(classifier, image: np.ndarray, mask: Optional[np.ndarray] = None,
                 target: Optional[int] = None) -> Optional[np.ndarray]:
    """Saliency of ``classifier`` for one image; ``target`` class index (default: the predicted one)."""
    if classifier.kind == "features":
        return None
    cfg = classifier.config
    x = ops.preprocess([image], [mask], cfg).to(classifier.device).requires_grad_(True)
    model = classifier.model
    with torch.enable_grad():
        f = None if classifier.kind == "image" else torch.as_tensor(particle_features(image, mask)[None]).to(
            classifier.device)
        logits = forward(model, x, f)
        k = int(logits.argmax(1)) if target is None else int(target)
        (grad,) = torch.autograd.grad(logits[0, k], x)
    sal = (grad * x).abs()[0, 0].detach().cpu()
    sal = F.avg_pool2d(sal[None, None], 3, stride=1, padding=1)[0, 0]

    H, W = image.shape
    m = to_bool_mask(mask)
    if m is not None and not bool(m.any()):
        m = None
    y0, y1, x0, x1 = region_box(H, W, m, cfg)
    h, w = resized_shape(y1 - y0, x1 - x0, cfg.size)
    top, left = (cfg.size - h) // 2, (cfg.size - w) // 2
    crop = sal[top : top + h, left : left + w]
    region = F.interpolate(crop[None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
    out = np.zeros((H, W), np.float32)
    out[y0:y1, x0:x1] = region.numpy()
    peak = out.max()
    return out / peak if peak > 0 else out
