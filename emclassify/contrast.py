"""Particle contrast: whether particles are darker than their surroundings (bright-field TEM,
cryo-EM) or brighter (negative stain, or an inverted image), and the checks built on it.

One measure for finders and classifiers alike: a particle's mean intensity minus that of the pixels
within :data:`POLARITY_RING_PX` outside its outline (its mask), negative for a dark particle. A set of
particles has one contrast (its *polarity*) when at least :data:`POLARITY_AGREEMENT` of them agree.

Why: a network trained on one contrast fails silently on the other. The learned finder found 65 of
3,257 NanoShapes particles inverted (BENCHMARKS.md "Particles of the other contrast"), and the bundled
classifier called 19 of its 40 sample particles right inverted against 36 as they are, with no
warning (BENCHMARKS.md "Particle images without their masks, or of the other contrast"). Finder cards record their
training particles' polarity (``--polarity`` then inverts a micrograph of the other contrast);
classifier cards record it as ``data.particle_contrast``, and ``batch`` flags each particle of the other
contrast and the run where most of them are.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage

# Particles have one contrast when at least this share of them is darker (or brighter) than a ring
# POLARITY_RING_PX wide around them: on the 31 NanoShapes micrographs 98.9 % of the 3,231 particles
# with unoutlined pixels around them are darker; all of the generator's liposomes are.
POLARITY_AGREEMENT = 0.8
POLARITY_RING_PX = 3
# A run is flagged when more than this share of its particles that could be measured has the other
# contrast than the model's training particles (single particles of the other contrast occur: 1.9 % of
# the NanoShapes crops, 0.5 % of the particles in its micrographs measured without their neighbours).
OTHER_CONTRAST_RUN_SHARE = 0.5
# How a row's warnings say so (other_contrast_warning); the run counts such rows.
OTHER_CONTRAST_NOTE = "particle is"


def particle_contrasts(image: np.ndarray, labels: np.ndarray, ring_px: int = POLARITY_RING_PX) -> np.ndarray:
    """float64 (n,): per particle of ``labels`` (int H x W, 0 background), its mean intensity in
    ``image`` (real H x W) minus that of the unlabelled pixels within ``ring_px`` of it (a square reach; a
    pixel within reach of several counts for the largest label); negative for a dark particle.
    Particles with no such pixels around them (packed in) are left out."""
    ids = np.unique(labels[labels > 0])
    if not len(ids):
        return np.zeros(0)
    ring = np.where(labels == 0, ndimage.grey_dilation(labels, size=2 * ring_px + 1), 0)
    values = np.asarray(image, dtype=np.float64)
    inside = np.asarray(ndimage.mean(values, labels, ids))
    with np.errstate(invalid="ignore", divide="ignore"):
        around = np.asarray(ndimage.mean(values, ring, ids))   # NaN where a particle has no ring pixel
    diff = inside - around
    return diff[np.isfinite(diff)]


def mask_contrast(image: np.ndarray, mask: np.ndarray, others: Optional[np.ndarray] = None) -> Optional[float]:
    """One particle's contrast, :func:`particle_contrasts`' measure: ``mask`` (bool-like H x W) against the
    pixels within :data:`POLARITY_RING_PX` of it in ``image`` (real H x W), leaving out ``others``
    (bool-like H x W: other particles, e.g. a micrograph's neighbours of a cut-out particle, which would
    darken its ring). None when the mask is empty, covers the image, or no ring pixel is left.

    Its own code for one particle because ``batch`` runs it on every file with a mask: only the mask's
    box grown by the ring is read, and the ring is a separable maximum filter (0.18 against 0.43 ms per
    200 x 200 sample image through :func:`particle_contrasts`; the same values, a property test holds them
    together)."""
    m = np.asarray(mask) != 0
    if not m.any() or m.all():
        return None
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    r = POLARITY_RING_PX
    box = (slice(max(0, rows[0] - r), rows[-1] + r + 1), slice(max(0, cols[0] - r), cols[-1] + r + 1))
    own = m[box]
    ring = ndimage.maximum_filter(own, size=2 * r + 1) & ~own
    if others is not None:
        ring &= ~(np.asarray(others)[box] != 0)
    if not ring.any():
        return None
    values = np.asarray(image)[box]
    return float(values[own].mean(dtype=np.float64) - values[ring].mean(dtype=np.float64))


def polarity_record(diffs: Sequence[float]) -> Dict:
    """The card record of a set of particle contrasts: ``particles`` measured, ``darker_share`` and
    ``polarity`` (``dark``, ``bright``, or None when mixed or none were measured)."""
    d = np.asarray(diffs, dtype=np.float64)
    if not len(d):
        return {"particles": 0, "polarity": None}
    dark = float(np.mean(d < 0))
    polarity = "dark" if dark >= POLARITY_AGREEMENT else "bright" if 1 - dark >= POLARITY_AGREEMENT else None
    return {"particles": int(len(d)), "darker_share": round(dark, 4), "polarity": polarity}


def other_contrast_warning(diff: Optional[float], polarity: Optional[str]) -> str:
    """A row warning when a particle's contrast ``diff`` is the other one than ``polarity`` (the
    model's training particles'), else ""."""
    if diff is None or polarity not in ("dark", "bright") or diff == 0 or (diff < 0) == (polarity == "dark"):
        return ""
    this, learnt = ("brighter", "darker") if polarity == "dark" else ("darker", "brighter")
    return (f"{OTHER_CONTRAST_NOTE} {this} than its surroundings but the model learnt {learnt} particles "
            "(negative stain, an inverted image, or a mask marking the background?): this prediction is unreliable")


def card_polarity(card_data) -> Optional[str]:
    """``dark`` or ``bright`` from a classifier card's ``data`` dict (its ``particle_contrast``
    record); None when mixed, not recorded (models made before it) or malformed."""
    record = card_data.get("particle_contrast") if isinstance(card_data, dict) else None
    polarity = record.get("polarity") if isinstance(record, dict) else None
    return polarity if polarity in ("dark", "bright") else None


def has_other_contrast_note(warnings: Sequence[str]) -> bool:
    """True when a row's warnings hold :func:`other_contrast_warning`'s."""
    return any(w.startswith(OTHER_CONTRAST_NOTE) and "than its surroundings" in w for w in warnings)


__all__ = ["OTHER_CONTRAST_NOTE", "OTHER_CONTRAST_RUN_SHARE", "POLARITY_AGREEMENT", "POLARITY_RING_PX",
           "card_polarity", "has_other_contrast_note", "mask_contrast", "other_contrast_warning", "particle_contrasts",
           "polarity_record"]
