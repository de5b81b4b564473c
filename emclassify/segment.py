"""Automatic particle segmentation, for images that come without a mask.

Used when a ``mask``-mode model meets an image without a mask (``batch``
records a warning on that row), and by the handcrafted features. The rule:

1. Smooth with a Gaussian (sigma = max(2.5, min(H, W) / 80) px).
2. Otsu threshold of the smoothed image; the *particle* side is the one that
   the image border mostly is not (TEM particles and membranes are darker than
   the carbon background, but the rule does not assume it).
3. Close small gaps (2 iterations), fill holes (a membrane ring becomes a disc).
4. Keep the connected component that covers the image centre, else the largest
   component touching the central half, else the largest one.

Returns a bool (H, W) mask; all-false when nothing stands out (flat image), in
which case preprocessing falls back to the margin crop.

Given masks are checked (:func:`mask_warnings`) for the other convention (particle 0, background
non-zero: :func:`background_mask_warning`) and for several particles in one mask
(:func:`several_particles_warning`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D float array (between-class variance maximised).

    The same value as ``skimage.filters.threshold_otsu(values, nbins=bins)`` (held to it in
    tests/test_features.py), kept because it is faster where it runs, once per particle without a
    mask: 0.68 vs 1.01 ms per 195 px particle (1 thread, this project's Intel VM, 2026-11-28).
    """
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def auto_mask(image: np.ndarray) -> np.ndarray:
    """Segment the particle of a 2-D image; bool (H, W), see module doc."""
    img = np.asarray(image, dtype=np.float32)
    H, W = img.shape
    smooth = ndimage.gaussian_filter(img, max(2.5, min(H, W) / 80.0))
    t = otsu_threshold(smooth.ravel())
    below = smooth <= t
    border = np.concatenate([below[0], below[-1], below[:, 0], below[:, -1]])
    fg = ~below if border.mean() > 0.5 else below
    if not fg.any() or fg.all():
        return np.zeros((H, W), bool)
    fg = ndimage.binary_closing(fg, iterations=2)
    fg = ndimage.binary_fill_holes(fg)
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros((H, W), bool)
    centre_label = labels[H // 2, W // 2]
    if centre_label:
        return labels == centre_label
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
    central = np.unique(labels[H // 4 : H - H // 4 or None, W // 4 : W - W // 4 or None])
    central = central[central > 0]
    if central.size:
        best = central[np.argmax(sizes[central - 1])]
    else:
        best = int(np.argmax(sizes)) + 1
    return labels == best


BACKGROUND_MASK_NOTE = "mask covers the image's border all round"
# A mask touching all four borders of its image and covering more than this share of it marks the
# background, not a particle (masks of the other convention: particle 0, background non-zero).
BACKGROUND_MASK_SHARE = 0.5


def background_mask_warning(mask: np.ndarray) -> str:
    """A row warning when a given mask (bool H x W) looks like it marks the background: it touches all
    four borders, covers more than :data:`BACKGROUND_MASK_SHARE` of the image, and encloses a hole of at
    least 1 % of it (the particle); else "". A particle cropped tightly touches the borders too, but what
    it leaves out are the corners, which touch them: no hole.

    Why: masks saved with the other convention (particle 0, background 255) were read as a particle the
    size of the image: the bundled model then called 38 of its 40 samples "uncertain", and the sizes
    were the background's, with no word but the contrast note."""
    if mask.size == 0 or not (mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()):
        return ""
    share = float(mask.mean())
    if share <= BACKGROUND_MASK_SHARE:
        return ""
    hole = ndimage.binary_fill_holes(mask) & ~mask
    if hole.sum() < 0.01 * mask.size:
        return ""
    return (f"{BACKGROUND_MASK_NOTE} and {100 * share:.0f} % of it: does it mark the background? (non-zero pixels "
            "are read as the particle)")


SEVERAL_PARTICLES_NOTE = "mask holds"
# A mask whose second-largest separate region is at least this share of its largest holds several
# particles (crops cut from an instance image without isolating the label). NanoShapes' 3,182 masks:
# one region each but one, whose second is 0.6 % of its first.
SEVERAL_PARTICLES_SHARE = 0.25


def several_particles_warning(mask: np.ndarray) -> str:
    """A row warning when a given mask (bool H x W) holds separate regions (8-connected) whose
    second-largest is at least :data:`SEVERAL_PARTICLES_SHARE` of the largest; else "". The whole mask
    is the particle: its box is the region a crop-mode model sees and its area the particle's size."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return ""
    # every region lies within the mask's box: label only that (batch checks every given mask)
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    labels, n = ndimage.label(box, structure=np.ones((3, 3), bool))
    if n < 2:
        return ""
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    if sizes[1] < SEVERAL_PARTICLES_SHARE * sizes[0]:
        return ""
    return (f"{SEVERAL_PARTICLES_NOTE} {n} separate regions, the second {100 * sizes[1] / sizes[0]:.0f} % of the "
            "largest: several particles? The box around all of them is classified and their area is taken as one "
            "particle's")


# The checks of a given mask, by the summary key that counts the rows they flag, and how each row says so.
MASK_CHECKS = {"background": BACKGROUND_MASK_NOTE, "several_particles": SEVERAL_PARTICLES_NOTE}


def mask_warnings(mask: np.ndarray) -> list:
    """The row warnings of a given mask (bool H x W): :func:`background_mask_warning`,
    :func:`several_particles_warning`; [] when it looks like one particle's."""
    return [w for w in (background_mask_warning(mask), several_particles_warning(mask)) if w]


# What each check found, said of several masks (the run's warning, the training decision's note).
MASK_PROBLEMS = {
    "background": ("cover their image's border all round and most of the image, enclosing a hole: masks that mark "
                   "the background (particle 0)? Non-zero mask pixels are read as the particle, so the region and "
                   "the size are the background's"),
    "several_particles": ("hold several separate regions of comparable size: several particles in one mask? The box "
                          "around all of them is the region, and their area is taken as one particle's"),
}


def describe_mask_problems(counts: dict, what: str) -> list:
    """One sentence per check with a count in ``counts`` (:data:`MASK_CHECKS` key -> masks), each
    ``"{count} {what} {description}"``; e.g. ``what="mask(s)"``."""
    return [f"{n} {what} {MASK_PROBLEMS[k]}" for k, n in counts.items() if n and k in MASK_PROBLEMS]


def mask_problem(warning: str):
    """The :data:`MASK_CHECKS` key a row warning belongs to, or None."""
    return next((k for k, note in MASK_CHECKS.items() if warning.startswith(note)), None)
