"""Particles found by a closed membrane ring: vesicles whose inside is no darker than the background.

Why: the classical finder thresholds the micrograph smoothed at the particles' scale, which finds
particles darker than the background as a whole (crystals, vesicles with dense content). An empty
liposome is a thin dark membrane around a lumen as bright as the background or brighter: smoothed
at that scale, the membrane and the bright lumen cancel, and the threshold never sees it. On
synthetic encapsulation fields the dark search found **none** of 63 empty vesicles and none of the
faint-content ("uncertain") ones while finding every full one (BENCHMARKS.md "Empty vesicles found by
their membrane"), so a lab's empty/full percentages from micrographs would have read 100 % full.

How, at the finder's working scale (particles about 24-48 px across, a membrane 1-2 px wide):

1. **Ridge response.** The larger eigenvalue of the Hessian of the 3x3-median-filtered image at
   :data:`RING_SIGMA` (Gaussian second derivatives): large and positive across a thin dark
   line, whatever lies either side of it; a bright lumen inside a dark membrane makes it larger,
   where it cancelled the membrane in the smoothed image. In units of its robust spread over the
   field (1.4826 x MAD: particles are a minority of the pixels).
2. **Membranes.** Hysteresis threshold (:data:`RING_HIGH` spreads for seeds, :data:`RING_LOW` to
   grow them, so a faint stretch of membrane keeps the ring closed), closed by one pixel.
3. **Rings.** Regions the membranes enclose (holes filling) are the candidates, and, when the finder
   asks (``edge_closes_up_to``), regions the membranes enclose together with the micrograph's edge
   up to a largest particle's disc (a ring cut by the edge; the open background is larger); their lumens, with
   lumens nested inside one another merged (the bilayers of a multilamellar vesicle enclose one
   particle, not several), each membrane pixel going to its nearest lumen, so
   two touching rings become two particles. Only lumens whose inscribed radius is at least
   :data:`MIN_SEED_RADIUS` of the widest in their region seed: slivers between bilayers that did not
   close all round join their vesicle.
4. A candidate is kept when its lumen is at least :data:`MIN_LUMEN_SHARE` of its area (a ring, not a
   solid blob of ridge pixels),
5. and when its surroundings are not as dark as its membrane: between packed dark particles, the
   inner edges of the particles around a gap of background form a closed "ring" too. With L, R and O
   the levels of the lumen, the membrane and a band 1-4 px outside, a ring is dropped where
   (L - O) / (L - R) > :data:`MAX_OUTSIDE_SHARE` (L and R means, O a median). Measured on the rings the finder kept: 0.3-0.7 on
   synthetic empty vesicles (their membrane's blur darkens the band), at most 0.3 on lamellar ones,
   above 0.97 for 117 of the 132 gaps it had added on the NanoShapes micrographs.

What it cannot see: membranes far thinner than a working pixel (the working scale is set by the particles' size, not the membrane's). The
classical finder adds these objects only where no particle it found already lies, and keeps them
only if their edge, measured at full resolution, is as sharp as a membrane's
(:data:`emclassify.finding.classical.SHARP_EDGE_WIDTH`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from .. import ops

RING_SIGMA = 1.0        # working px: the Hessian's scale (a membrane binned to the working scale is 1-2 px wide)
RING_HIGH = 4.0         # membrane seeds: ridge response this many spreads above its median
RING_LOW = 2.0          # ... grown through pixels this many spreads above it
MIN_LUMEN_SHARE = 0.3   # a ring's enclosed lumen is at least this share of its area
MIN_SEED_RADIUS = 0.25  # a lumen seeds its own ring when its inscribed radius is this share of its region's widest
OUTSIDE_BAND = (1, 4)   # working px beyond a ring: its surroundings (step 5)
# A ring whose surroundings are darker than this share of the way from its lumen's level to its membrane's
# is a gap enclosed by particles, not a particle (step 5).
MAX_OUTSIDE_SHARE = 0.8


def ridge_response(flat: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """(response, median, spread): the larger Hessian eigenvalue of ``flat`` (float32 (H, W), particles
    dark) at :data:`RING_SIGMA`, positive across dark thin lines, with its median and robust spread
    over the field (1.4826 x MAD of a <= 0.26 Mpx subsample, without values repeated in featureless areas).

    The Hessian is SciPy's Gaussian second derivatives (kernels 4 sigma wide), not
    ``skimage.feature.hessian_matrix``: at sigma <= 1 that one widens its kernels to 100 sigma
    against aliasing, 1.1 s instead of 11 ms on a 416 x 416 image (measured), which would have
    halved the finder's speed on the NanoShapes micrographs.
    """
    # (rr + cc) / 2 + sqrt(((rr - cc) / 2)^2 + rc^2), in place: at most four images held (an 8k micrograph
    # searched at full size is 256 MB each)
    rr = ndimage.gaussian_filter(flat, RING_SIGMA, order=(2, 0))
    cc = ndimage.gaussian_filter(flat, RING_SIGMA, order=(0, 2))
    response = rr + cc
    response *= 0.5
    rr -= cc
    del cc
    rr *= 0.5
    rr *= rr
    rc = ndimage.gaussian_filter(flat, RING_SIGMA, order=(1, 1))
    rc *= rc
    rr += rc
    del rc
    np.sqrt(rr, out=rr)
    response += rr
    del rr
    step = max(1, int(math.sqrt(response.size / 2**18)))
    sub = response[::step, ::step].ravel()
    # Featureless areas (no data filled with one value, saturated pixels) give one response value over and
    # over; counted, they shrank the spread and noise made rings (a montage a third empty: 5 found in its
    # noise). Noise never repeats a float value that often.
    values, counts = np.unique(sub, return_counts=True)
    repeated = values[counts > max(16, sub.size // 1000)]
    if repeated.size and repeated.size < values.size:
        sub = sub[~np.isin(sub, repeated)]
    median = float(np.median(sub))
    spread = 1.4826 * float(np.median(np.abs(sub - median)))
    return response, median, spread


def _per_object_mean(values: np.ndarray, labels: np.ndarray, where: np.ndarray, count: int) -> np.ndarray:
    """float64 (count,): the mean of ``values`` over each object's pixels in ``where``; NaN where none.
    (Means, not medians: ``ndimage.median`` sorts every pixel given, a third of the ring search's time.)"""
    sel = where & (labels > 0)
    counts = np.bincount(labels[sel], minlength=count + 1)[1:]
    sums = np.bincount(labels[sel], weights=values[sel], minlength=count + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def _outside_medians(values: np.ndarray, labels: np.ndarray, which: np.ndarray,
                     native: Optional[bool] = None) -> np.ndarray:
    """float64 (len(which),): for objects ``which + 1``, the median of ``values`` over the pixels
    :data:`OUTSIDE_BAND` px beyond each, whatever lies there (other objects included); NaN where none.
    Per object in its box: time scales with the objects."""
    out = np.full(len(which), np.nan)
    H, W = labels.shape
    reach = OUTSIDE_BAND[1] + 1
    boxes = ndimage.find_objects(labels)
    for i, k in enumerate(which + 1):
        box = boxes[k - 1] if k - 1 < len(boxes) else None
        if box is None:
            continue
        ys = slice(max(0, box[0].start - reach), min(H, box[0].stop + reach))
        xs = slice(max(0, box[1].start - reach), min(W, box[1].stop + reach))
        beyond = ops.distance_transform_edt(labels[ys, xs] != k, native=native)
        band = (beyond > OUTSIDE_BAND[0]) & (beyond <= OUTSIDE_BAND[1])
        if band.any():
            out[i] = float(np.median(values[ys, xs][band]))
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(mask)`` (4-connected background), by labelling the background
    once instead of dilating from the border: 3 instead of 9-12 ms on a 416 x 416 mask (measured).
    mask: bool (H, W); returns bool (H, W). The classical finder's dark search fills its masks so too."""
    mask = np.asarray(mask, bool)
    if mask.size == 0:
        return mask.copy()
    background, count = ndimage.label(~mask)
    outside = np.zeros(count + 1, bool)
    outside[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = True
    outside[0] = False   # the mask's own pixels
    return ~outside[background]


def _closed_by_edge(membrane: np.ndarray, enclosed: np.ndarray, largest: float) -> np.ndarray:
    """bool (H, W): the regions ``membrane`` encloses only together with the image's edge (a ring cut by
    the micrograph's edge) that are at most a disc ``largest`` px across, touch the edge along at most
    twice as many pixels as they touch their membrane (a cut disc's chord is shorter than its arc; the
    pixel rim undercounts a diagonal arc) and touch no two opposite edges. The open background is
    larger than a particle; in an image not much larger than one it lies along the edges or spans the
    image (a property test found a 1 x 2 image made one "ring" of the whole image), and an image no
    larger than a particle on either side gets none."""
    if min(membrane.shape) <= largest:
        return np.zeros(membrane.shape, bool)   # no room beside a cut particle for the background to be larger
    framed = np.pad(membrane, 1, constant_values=True)
    regions, count = ndimage.label(fill_holes(framed)[1:-1, 1:-1] & ~enclosed)
    if count == 0:
        return np.zeros(membrane.shape, bool)
    area = np.bincount(regions.ravel(), minlength=count + 1)
    border = np.ones(regions.shape, bool)
    border[1:-1, 1:-1] = False
    on_edge = np.bincount(regions[border], minlength=count + 1)
    rim = (regions > 0) & ~ndimage.binary_erosion(regions > 0) & ~border
    on_membrane = np.bincount(regions[rim], minlength=count + 1)

    def touches(side):
        return np.bincount(side, minlength=count + 1) > 0

    # cut twice, by opposite edges: wider than the image, not a particle in it
    across = (touches(regions[0]) & touches(regions[-1])) | (touches(regions[:, 0]) & touches(regions[:, -1]))
    ring = (area <= math.pi / 4 * largest ** 2) & (on_edge <= 2 * on_membrane) & ~across
    ring[0] = False
    return ring[regions]


def _split_between_lumens(enclosed: np.ndarray, lumens: np.ndarray, n: int) -> np.ndarray:
    """int32 labels 1..m of the rings: each region of ``enclosed`` with one lumen (of ``lumens``, 1..n)
    is one ring; a region with several is split between the lumens whose inscribed radius
    is at least :data:`MIN_SEED_RADIUS` of its widest one's (touching rings; slivers of background
    between bilayers that did not close all round join their vesicle). Per region in its box: most
    regions hold one lumen and cost nothing."""
    regions, n_regions = ndimage.label(enclosed)
    inside = lumens > 0
    region_of = np.zeros(n + 1, np.int64)
    region_of[lumens[inside]] = regions[inside]   # a lumen lies within one region
    per_region = np.bincount(region_of[1:], minlength=n_regions + 1)
    lumen_of = np.zeros(n_regions + 1, np.int64)
    lumen_of[region_of[1:]] = np.arange(1, n + 1)   # right where the region holds one lumen
    labels = np.where(per_region[regions] == 1, lumen_of[regions], 0)
    boxes = ndimage.find_objects(regions)
    for r in np.flatnonzero(per_region >= 2):
        box = boxes[r - 1]
        own = regions[box] == r
        sub = np.where(own, lumens[box], 0)
        # inscribed radius ~ 2 area / perimeter (exact for a disc; a sliver's width): no distance transform
        inner = sub > 0
        rim = inner & ~ndimage.binary_erosion(inner)
        radius = 2.0 * np.bincount(sub[inner], minlength=n + 1) / np.maximum(np.bincount(sub[rim], minlength=n + 1), 1)
        seeds = radius >= MIN_SEED_RADIUS * radius.max()
        seeds[0] = False
        markers = np.where(seeds[sub], sub, 0)
        # each pixel to its nearest seed lumen (Euclidean, not geodesic: within one region they differ little)
        nearest = ndimage.distance_transform_edt(markers == 0, return_distances=False, return_indices=True)
        labels[box][own] = markers[nearest[0], nearest[1]][own]
    present = np.zeros(n + 1, bool)
    present[labels.ravel()] = True
    present[0] = False
    renumber = np.zeros(n + 1, np.int32)
    renumber[present] = np.arange(1, int(present.sum()) + 1)
    return renumber[labels]


def ring_objects(image: np.ndarray, polarity: str = "dark", min_diameter: float = 0.0, native: Optional[bool] = None,
                 edge_closes_up_to: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, strength) of the closed rings of ``image`` (module doc).

    image: (H, W), any real dtype, the micrograph at the finder's working scale; polarity: ``dark``
    or ``bright`` particles (and membranes); min_diameter: px, smaller rings (equivalent-circle
    diameter) are dropped before their surroundings are judged (time: noise makes many small loops);
    edge_closes_up_to: px, or None; regions closed only by the image's edge and at most this diameter's
    disc in area are enclosed too (rings cut by the edge: on 10 synthetic sets cut so that their edges
    cut particles, 117 instead of 93 of the 171 cut particles found; BENCHMARKS.md "Rings cut by the
    micrograph's edge").
    labels: int32 (H, W), rings 1..n with their lumens (0 elsewhere); strength: float64 (n,), each
    ring's mean ridge response over its membrane pixels, in spreads above the field's median
    (>= RING_LOW; infinite where the image holds values beyond float32's range).
    """
    from skimage import filters, morphology

    sign = np.float32(1.0 if polarity == "dark" else -1.0)
    flat = sign * ops.median3x3(np.asarray(image, np.float32), native=native)
    response, median, spread = ridge_response(flat)
    empty = (np.zeros(response.shape, np.int32), np.zeros(0))
    if not spread > 0:
        return empty   # a constant image
    strength_map = response
    strength_map -= median
    strength_map /= spread
    del response
    membrane = filters.apply_hysteresis_threshold(strength_map, RING_LOW, RING_HIGH)
    membrane = morphology.closing(membrane, morphology.disk(1))
    enclosed = fill_holes(membrane)
    if edge_closes_up_to:
        enclosed |= _closed_by_edge(membrane, enclosed, edge_closes_up_to)
    # A lumen nested in another's hole (the bilayers of one multilamellar vesicle) joins it.
    lumens, n = ndimage.label(fill_holes(enclosed & ~membrane))
    if n == 0:
        return empty
    labels = _split_between_lumens(enclosed, lumens, n)
    n = int(labels.max())
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    lumen_share = 1.0 - np.bincount(labels[membrane], minlength=n + 1)[1:] / np.maximum(area, 1)
    # Step 5: the surroundings. Levels on the lightly smoothed image: lumen L and membrane R (means), and
    # O, the median of the band OUTSIDE_BAND px beyond the ring.
    smooth = ndimage.gaussian_filter(flat, RING_SIGMA)
    L = _per_object_mean(smooth, labels, ~membrane, n)
    R = _per_object_mean(smooth, labels, membrane, n)
    ringlike = (lumen_share >= MIN_LUMEN_SHARE) & (area >= math.pi / 4 * min_diameter ** 2)
    # only where the lumen is brighter than the membrane can the surroundings be "as dark as the membrane"
    judged = np.flatnonzero(ringlike & (L > R))
    O = _outside_medians(smooth, labels, judged, native)
    with np.errstate(invalid="ignore"):
        ringlike[judged] &= ~((L[judged] - O) / (L[judged] - R[judged]) > MAX_OUTSIDE_SHARE)
    keep = np.concatenate([[False], ringlike])
    kept = int(keep.sum())
    if kept == 0:
        return empty
    renumber = np.zeros(n + 1, np.int32)
    renumber[keep] = np.arange(1, kept + 1)
    labels = renumber[labels]
    strength = _per_object_mean(strength_map, labels, membrane, kept)
    return labels, np.nan_to_num(strength, nan=RING_LOW)
