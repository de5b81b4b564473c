"""What a particle finder returns: an instance label image and one measured :class:`Particle` each.

Coordinates are pixel indices of the micrograph as numpy and scikit-image count them: x is the
column, y the row, (0, 0) the centre of the top-left pixel; boxes are half-open
``[x0, x1) x [y0, y1)``. Sizes: ``area_px`` is the
pixel count of the instance; ``diameter_px`` the equivalent-circle diameter ``2 sqrt(area / pi)``;
the nanometre figures are these times the pixel size (nm/px), ``None`` when it is unknown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ParticleSize:
    """Size of one particle from its mask: pixels always, nanometres when the pixel size is known."""

    area_px: int
    diameter_px: float
    pixel_size_nm: Optional[float] = None

    @property
    def area_nm2(self) -> Optional[float]:
        return None if self.pixel_size_nm is None else self.area_px * self.pixel_size_nm ** 2

    @property
    def diameter_nm(self) -> Optional[float]:
        return None if self.pixel_size_nm is None else self.diameter_px * self.pixel_size_nm

    @classmethod
    def from_area(cls, area_px: int, pixel_size_nm: Optional[float] = None) -> "ParticleSize":
        return cls(int(area_px), 2.0 * math.sqrt(max(0, area_px) / math.pi), pixel_size_nm)

    @classmethod
    def from_mask(cls, mask: Optional[np.ndarray], pixel_size_nm: Optional[float] = None) -> Optional["ParticleSize"]:
        """Size of a bool/0-nonzero mask; None for a missing or empty mask."""
        if mask is None:
            return None
        area = int(np.count_nonzero(mask))
        return cls.from_area(area, pixel_size_nm) if area else None


@dataclass(frozen=True)
class Particle:
    """One found particle. ``index`` is its value in the label image (1-based)."""

    index: int
    box: Tuple[int, int, int, int]   # x0, y0, x1, y1, half-open
    centroid: Tuple[float, float]    # cx, cy
    size: ParticleSize
    touches_border: bool
    score: float                     # detection confidence in [0, 1] (finder-specific, see the finder)

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass
class Detections:
    """The particles of one micrograph.

    labels: int32 (H, W), 0 background, ``p.index`` the pixels of particle ``p``.
    particles: in label order.
    notes: what the finder noted (e.g. the diameter it estimated).
    warnings: what puts these particles in doubt (e.g. unlike the particles a learned finder was
    trained on); every particle row of the micrograph carries them (:mod:`emclassify.micrographs`).
    """

    labels: np.ndarray
    particles: List[Particle]
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.particles)


def measure(labels: np.ndarray, scores: Optional[Dict[int, float]] = None,
            pixel_size_nm: Optional[float] = None) -> Detections:
    """Measure every instance of a label image (int, 0 = background) into :class:`Detections`.

    Labels are renumbered 1..n in order of first appearance (row-major) so that the CSV's
    ``particle`` numbers read top to bottom. scores: label -> score (default 1.0).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if labels.dtype.kind == "b":
        labels = labels.view(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be whole numbers, got {labels.dtype}")
    H, W = labels.shape
    if labels.size and int(labels.min()) < 0:
        raise ValueError("labels must be 0 (background) or positive")
    top = int(labels.max()) if labels.size else 0
    if top == 0:
        return Detections(np.zeros((H, W), np.int32), [])
    # Each label's first pixel in row-major order, from its box: the box's top row holds it, so the
    # first pixel is in that row. Memory scales with the particles, not with the micrograph (np.unique
    # over an 8k x 8k label image sorted 67 M pixels and held ~1.2 GB of indices).
    objects = []
    for old, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        ys, xs = box
        col = xs.start + int(np.argmax(labels[ys.start, xs] == old))
        objects.append((ys.start * W + col, old, box))
    objects.sort(key=lambda o: o[0])
    lut = np.zeros(top + 1, dtype=np.int32)
    for k, (_, old, _) in enumerate(objects, start=1):
        lut[old] = k
    relabelled = lut[labels]
    particles: List[Particle] = []
    # Per object, inside its own box: memory and time scale with the particles, not with the
    # micrograph (a full-size float64 weight image would be 512 MB for an 8k x 8k one).
    for k, (_, old, (ys, xs)) in enumerate(objects, start=1):
        rows, cols = np.nonzero(labels[ys, xs] == old)
        box = (int(xs.start), int(ys.start), int(xs.stop), int(ys.stop))
        border = box[0] == 0 or box[1] == 0 or box[2] == W or box[3] == H
        score = float(scores.get(old, 1.0)) if scores else 1.0
        centroid = (float(cols.mean()) + xs.start, float(rows.mean()) + ys.start)
        particles.append(Particle(k, box, centroid, ParticleSize.from_area(len(rows), pixel_size_nm),
                                  bool(border), score))
    return Detections(relabelled.astype(np.int32, copy=False), particles)


def cut_by(det: Detections, region: np.ndarray) -> Detections:
    """``det`` with every particle that touches ``region`` (bool H x W, e.g. pixels that hold no
    data) or lies next to it marked ``touches_border``: cut by the edge of what was imaged, as at
    the micrograph's own edge."""
    near = ndimage.binary_dilation(region)
    cut = set(np.unique(det.labels[near]).tolist()) - {0}
    if not cut:
        return det
    particles = [replace(p, touches_border=True) if p.index in cut else p for p in det.particles]
    return Detections(det.labels, particles, list(det.notes), list(det.warnings))


def without_border_particles(det: Detections, pixel_size_nm: Optional[float] = None) -> Detections:
    """``det`` without the particles cut by the micrograph's edge (the finders' ``exclude_border``),
    remeasured so the rest are renumbered 1..n; scores, notes and warnings are kept."""
    if not any(p.touches_border for p in det.particles):
        return det
    cut = [p.index for p in det.particles if p.touches_border]
    out = measure(np.where(np.isin(det.labels, cut), 0, det.labels), {p.index: p.score for p in det.particles},
                  pixel_size_nm)
    out.notes, out.warnings = list(det.notes), list(det.warnings)
    return out


def cut_out(image: np.ndarray, labels: np.ndarray, particle: Particle, context: int
            ) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int, int, int]]:
    """The particle image a classifier sees: its box grown by ``context`` px per side (clipped to
    the micrograph), and its own mask there (other particles are outside it).

    Returns (image crop, bool mask crop, (x0, y0, x1, y1) of the crop in the micrograph).
    """
    H, W = labels.shape
    x0, y0, x1, y1 = particle.box
    cx0, cy0 = max(0, x0 - context), max(0, y0 - context)
    cx1, cy1 = min(W, x1 + context), min(H, y1 + context)
    crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
    mask = labels[cy0:cy1, cx0:cx1] == particle.index
    return crop, mask, (cx0, cy0, cx1, cy1)


def sizes_by_class(diameters: Sequence[float], classes: Sequence[str], names: Sequence[str]) -> Dict[str, Dict]:
    """Median, quartiles and count of diameters per class name (only classes in ``names``)."""
    out: Dict[str, Dict] = {}
    d = np.asarray(diameters, dtype=np.float64)
    c = np.asarray(classes, dtype=object)
    for name in names:
        v = d[c == name] if len(d) else d
        if not len(v):
            out[name] = {"n": 0, "median": None, "q1": None, "q3": None}
            continue
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        out[name] = {"n": int(len(v)), "median": round(float(med), 3), "q1": round(float(q1), 3),
                     "q3": round(float(q3), 3)}
    return out
