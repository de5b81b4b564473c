"""Turning particle arrays into pictures: contrast stretch, mask outline, saliency overlay, thumbnails."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap

from emclassify.io import ImageReadError, read_image


def stretch(arr: np.ndarray, black: float = 1.0, white: float = 99.0, gamma: float = 1.0) -> np.ndarray:
    """Any-dtype image -> uint8: the ``black``..``white`` percentiles mapped to 0..255, then ``gamma``
    (< 1 brightens the dark membrane layers, > 1 darkens). Display only; never the model's input."""
    a = np.asarray(arr, dtype=np.float32)
    lo, hi = np.percentile(a, [black, white]) if a.size > 1 else (float(a.min()), float(a.max()))
    if hi <= lo:
        hi = lo + 1
    unit = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    if gamma != 1.0:
        unit = unit ** float(gamma)
    return (unit * 255.0).astype(np.uint8)


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
            show_mask: bool = True, show_saliency: bool = True, contrast=(1.0, 99.0, 1.0)) -> QImage:
    """Grey particle (``contrast``: black %, white %, gamma as :func:`stretch`), optional saliency heat
    overlay (:func:`saliency_colour`: red -> yellow, alpha by strength) and mask outline (cyan)."""
    g = stretch(image, *contrast).astype(np.float32)
    rgb = np.stack([g, g, g], axis=-1)
    if show_saliency and saliency is not None:
        heat, alpha = saliency_colour(np.clip(saliency, 0, 1))
        rgb = rgb * (1 - alpha) + heat * alpha
    if show_mask and mask is not None:
        rgb[outline(mask)] = (0, 230, 255)
    return _qimage_rgb(rgb.astype(np.uint8))


# One colour per class in a micrograph's outline view (colour-blind-safe Okabe-Ito order).
CLASS_COLOURS = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
                 (204, 121, 167)]
UNCLASSIFIED_COLOUR = (160, 160, 160)


def class_colour(k: Optional[int]):
    return UNCLASSIFIED_COLOUR if k is None else CLASS_COLOURS[k % len(CLASS_COLOURS)]


def micrograph_outlines(image: np.ndarray, labels: np.ndarray, class_of: dict, selected: Optional[int] = None,
                        contrast=(1.0, 99.0, 1.0)) -> QImage:
    """A micrograph with each particle's outline in its class colour (:func:`class_colour`;
    ``class_of``: particle index -> class index or None) and the ``selected`` particle filled
    translucent white. Display only."""
    from skimage.segmentation import find_boundaries

    g = stretch(image, *contrast).astype(np.float32)
    rgb = np.stack([g, g, g], axis=-1)
    if selected:
        sel = labels == selected
        rgb[sel] = rgb[sel] * 0.5 + 127
    edges = find_boundaries(labels, mode="inner")
    n = int(labels.max()) if labels.size else 0
    lut = np.zeros((n + 1, 3), np.float32)
    for k in range(1, n + 1):
        lut[k] = class_colour(class_of.get(k))
    rgb[edges] = lut[labels[edges]]
    return _qimage_rgb(rgb.astype(np.uint8))


def saliency_colour(s: np.ndarray):
    """Saliency in [0, 1] -> (RGB float ``... x 3``, alpha ``... x 1``): red at weak, yellow at strong,
    more opaque where stronger. The colour key (:func:`saliency_key`) is drawn from the same function."""
    s = np.asarray(s, dtype=np.float32)[..., None]
    heat = np.concatenate([np.full_like(s, 255), 255 * s, np.zeros_like(s)], axis=-1)
    return heat, 0.65 * s


def saliency_key(width: int = 160, height: int = 12) -> QPixmap:
    """A horizontal colour bar, weak (left) to strong (right) saliency, over mid grey."""
    ramp = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    heat, alpha = saliency_colour(ramp)
    rgb = np.full((height, width, 3), 128.0, np.float32) * (1 - alpha) + heat * alpha
    return QPixmap.fromImage(_qimage_rgb(rgb.astype(np.uint8)))


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
