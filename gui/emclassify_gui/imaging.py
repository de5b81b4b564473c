"""Turning particle arrays into pictures: contrast stretch, mask outline, saliency overlay, thumbnails."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap

from emclassify.io import ImageReadError, read_image


def stretch(arr: np.ndarray) -> np.ndarray:
    """Any-dtype image -> uint8 with a 1–99 % percentile contrast stretch."""
    a = np.asarray(arr, dtype=np.float32)
    lo, hi = np.percentile(a, [1, 99]) if a.size > 1 else (float(a.min()), float(a.max()))
    if hi <= lo:
        hi = lo + 1
    return np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _qimage_rgb(rgb: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(rgb)
    h, w, _ = rgb.shape
    return QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()


def outline(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask) != 0
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def compose(image: np.ndarray, mask: Optional[np.ndarray] = None, saliency: Optional[np.ndarray] = None,
            show_mask: bool = True, show_saliency: bool = True) -> QImage:
    """Grey particle, optional saliency heat overlay (red -> yellow, alpha by strength) and mask outline (cyan)."""
    g = stretch(image).astype(np.float32)
    rgb = np.stack([g, g, g], axis=-1)
    if show_saliency and saliency is not None:
        s = np.clip(saliency, 0, 1)[..., None]
        heat = np.concatenate([np.full_like(s, 255), 255 * s, np.zeros_like(s)], axis=-1)
        alpha = 0.65 * s
        rgb = rgb * (1 - alpha) + heat * alpha
    if show_mask and mask is not None:
        rgb[outline(mask)] = (0, 230, 255)
    return _qimage_rgb(rgb.astype(np.uint8))


class ThumbnailCache:
    """Small pixmaps of image files, decoded on demand and kept for the most recent ``size`` files."""

    def __init__(self, side: int = 48, size: int = 2000):
        self.side, self.size = side, size
        self._cache: "OrderedDict[str, QPixmap]" = OrderedDict()

    def get(self, path: Path) -> Optional[QPixmap]:
        key = str(path)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            arr = read_image(path).array
        except ImageReadError:
            pix = None
        else:
            g = stretch(arr)
            img = _qimage_rgb(np.stack([g, g, g], -1))
            pix = QPixmap.fromImage(img.scaled(self.side, self.side, Qt.KeepAspectRatio, Qt.SmoothTransformation))
        self._cache[key] = pix
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return pix
