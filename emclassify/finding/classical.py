"""The ``classical`` particle finder: threshold and watershed, built on scikit-image and SciPy.

Steps, on one greyscale micrograph (any dtype; float32 inside); ``d`` is the particle diameter:

1. **Working scale.** ``d`` is ``diameter_px`` or estimated (:func:`estimate_diameter`, on a
   copy binned to at most 1024 px, then refined at a finer binning where that left the particles
   small). Where ``d`` exceeds ``2 * TARGET_DIAMETER_PX`` the image
   is binned by an integer factor so that particles are about ``TARGET_DIAMETER_PX`` across:
   an 8k x 8k micrograph of 200 px particles is searched at 1k x 1k, and the labels are
   scaled back up (nearest neighbour, so outlines are steps of the bin factor).
2. **Clean-up.** A 3x3 median removes salt-and-pepper noise (hot/dead pixels, x-ray hits);
   the background (a grey closing ``2 d`` wide, the "rolling ball", smoothed) is subtracted,
   which removes uneven illumination and carbon texture; a Gaussian of sigma ``d / 15`` (at
   least 1 px) smooths shot noise.
3. **Foreground.** Otsu's threshold on the particle side (``polarity``: ``dark`` particles on a
   bright background, as in bright-field TEM and cryo-EM, or ``bright``), closed and with holes
   filled (a membrane ring becomes a disc). Touching particles: a second mask also requires each
   pixel to lie ``NOISE_MULTIPLE`` noise sigmas below the mean of its ``1.5 d`` window (gaps
   between touching particles are brighter than their insides); an object is replaced by these
   separated pieces where they keep :data:`SEPARATED_SHARE` of its area (a ring whose lumen is
   as bright as the background keeps only its rim under the local test, and stays whole).
4. **Splitting.** Watershed of the distance transform from its h-maxima (h = ``d / 12``, at
   least 1 px, on the distance map smoothed by 1 px): one marker per convex blob, so two
   touching discs become two particles.
5. **Filters.** Objects smaller than ``min_diameter`` (default ``d / 4``, at least 4 px) or
   fainter than ``min_score`` are dropped (unless their score is at least ``sharp_min_score`` and
   their edge, measured at full resolution, is sharp: :data:`SHARP_MIN_SCORE`); objects larger than
   ``max_diameter`` (default ``4 d``:
   clumps the watershed could not split) are dropped; both are counted in the notes, and a
   micrograph where the faint ones outnumber those kept is flagged (:func:`faint_warning`), as is
   one where the faint objects kept for their sharp edges are at least as many as the particles kept
   by their contrast or ring (:func:`rescued_warning`: fields of white or shot noise).
   Objects whose edge is too gradual for a particle's are dropped and counted in the notes:
   :func:`edge_sharpness` under ``min_edge_sharpness`` (a background blotch of about the
   particles' size, which the rolling ball leaves, darkens towards its middle over many pixels; a
   particle's contrast is at its edge). Particles cut by the border are kept and flagged
   (``exclude_border=True`` drops them).
   **Rings.** Particles no darker inside than the background (an empty liposome: a thin dark
   membrane around a lumen as bright as the background or brighter) never cross the threshold: the
   smoothing cancels the membrane against the lumen. They are found by their closed membrane ring
   (:mod:`emclassify.finding.rings`, at the working scale; a ring cut by the micrograph's edge is
   closed by it) and added where the particles kept so far
   cover at most :data:`RING_OVERLAP` of them, then kept only if their edge at full resolution is as
   sharp as a membrane's (:data:`SHARP_EDGE_WIDTH`, as for the faint objects above); counted in the
   notes.
6. **Outlines.** Each outline is moved onto the particle's own edge, measured at full resolution on
   the lightly smoothed micrograph (:mod:`emclassify.finding.outlines`): the smoothing of step 2
   had put the threshold's outlines on the tail of a thin membrane, several pixels outside it.

``score`` of a particle: its contrast-to-noise ratio mapped to [0, 1): ``1 - exp(-cnr / 3)``,
where cnr = |median of the particle's pixels beyond the threshold (a vesicle's membrane, not the
lumen that hole filling added) - median of the background| / background spread, both on
the smoothed, flattened image (spread: 1.4826 x MAD of the background pixels, i.e. what noise
and texture leave). 0.63 means cnr 3 (the default ``min_score``), 0.95 cnr 9.

Measured (BENCHMARKS.md, "Finding particles", "Background blotches", "Outlines on the particle's own
edge", "Faint vesicles with sharp edges", "Empty vesicles found by their membrane"): on sparse
synthetic liposome fields it finds most vesicles (recall 0.63-0.94 on 12 lamellarity sets, merged
neighbours the main misses), with outlines 2-6 % larger in area than the drawn ones (7 % smaller on
vesicles with dark content); on encapsulation fields it finds the empty vesicles by their membrane
(none before the ring search), except where background texture merges with them; on the densely
packed, touching nanocrystals of the NanoShapes micrographs it splits clusters poorly (F1 0.61 at
IoU 0.5, IoU 0.77).
Measure it on your own micrographs with ``emclassify find-eval`` before relying on counts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import ndimage

from .. import ops
from ..defaults import POLARITIES
from .detections import Detections, measure, without_border_particles
from .outlines import move_outlines_to_edges, object_profiles
from .rings import fill_holes, ring_objects

TARGET_DIAMETER_PX = 24.0   # particles are found at about this size (px) after binning
ESTIMATE_SIDE = 1024        # the diameter is estimated on a copy binned to at most this side
# Where particles are small, the estimate is refined on this many windows of ESTIMATE_SIDE binned px,
# up to this many times (estimate_diameter).
ESTIMATE_TILES = 2
ESTIMATE_REFINEMENTS = 3
# A first estimate wider than this share of the binned copy's side means that pass merged the
# particles into one object: the estimate is made on windows at full size instead (estimate_diameter).
WHOLE_FIELD_SHARE = 0.25
# Diameter per distance-transform maximum: 2 for a disc (2.26 would give a square's
# equivalent-circle diameter, but the smaller scale split touching NanoShapes cubes better:
# F1 0.657 vs 0.640 at 2.3, BENCHMARKS.md), so the estimate is on the small side for polygons.
DIAMETER_PER_RADIUS = 2.0
# A foreground pixel is this many noise standard deviations beyond its local mean: without it,
# sparse fields (a few liposomes on much background) gave hundreds of noise blobs.
NOISE_MULTIPLE = 2.0
# An object of the global threshold is replaced by its locally separated pieces when they keep
# at least this share of its area (module doc, step 3).
SEPARATED_SHARE = 0.6
# Found objects whose contrast-to-noise score is below this are dropped (noise, texture).
MIN_SCORE = 0.63
# ... unless their score is at least this and their edge, measured at full resolution on the
# perimeter-averaged profile (outlines.ObjectProfile.relative_width), is under SHARP_EDGE_WIDTH of
# their diameter. Why: the working scale's smoothing dilutes a thin membrane, and a unilamellar vesicle
# whose lumen is as bright as the background scored as faint (a third of the missed vesicles on some
# synthetic fields, and the faint ones were mostly unilamellar: the counts leaned to multilamellar);
# at full resolution its edge is a few pixels wide (median 0.04-0.06 d), while noise blobs and
# background texture of the particles' size darken over 0.2-0.25 d (BENCHMARKS.md "Faint vesicles
# with sharp edges").
SHARP_MIN_SCORE = 0.5
SHARP_EDGE_WIDTH = 0.08
# A micrograph where more objects were dropped as too faint than were kept, and at least this
# many, is flagged (:func:`faint_warning`).
MIN_FAINT_FLAGGED = 10
# Objects whose edge_sharpness is under this are dropped (module doc, step 5). Chosen on four sets of
# synthetic liposome fields, whose backgrounds hold blotches of the vesicles' size, and the NanoShapes
# micrographs: it dropped 58 of the 89 objects found that were not vesicles and 7 of the 286 vesicles
# found (NanoShapes: F1 0.537 -> 0.534); on four sets made afterwards precision rose from 0.65-0.96
# to 0.87-0.99 for 1-2 % of the vesicles (BENCHMARKS.md "Background blotches").
MIN_EDGE_SHARPNESS = 0.4
# The rings edge_sharpness compares, in units of r (an eighth of the particle diameter, >= 2 px):
# the edge is r either side of the outline, the surroundings 3r..6r out, and only where no other
# object is within 6r (between packed particles there is no open background to compare with).
FAR_RING = (3, 6)
# A closed ring (rings.ring_objects) is added as a particle only where at most this share of it lies on
# particles the dark search kept (more: it is that particle's own membrane or edge).
RING_OVERLAP = 0.2
# A faint object of the dark search (still to be judged by its edge) with more than this share of its area
# within an added ring is that particle found faintly: the ring replaces it. Without this, such objects
# blocked the ring and then failed the edge test (a field of only empty vesicles: 15 of 40 found, now 23).
PENDING_INSIDE = 0.5


def faint_warning(kept: int, faint: int) -> Optional[str]:
    """A warning when ``faint`` objects dropped under the contrast cut outnumber the ``kept`` ones
    (and are at least :data:`MIN_FAINT_FLAGGED`); None otherwise.

    Why: where little stands out from the background, thresholding finds a continuum of blobs
    around the cut. Measured (BENCHMARKS.md "Particles unlike the finder's own"): on the 31
    NanoShapes micrographs it flagged exactly the five where the finder kept under 30 % of the
    outlined particles (F1 0.24-0.43), and every field of smoothed noise (an empty carbon area
    looks like it: 43-57 blobs kept there, 637-711 dropped).
    """
    if faint < MIN_FAINT_FLAGGED or faint <= kept:
        return None
    return (f"{faint} objects were too faint (contrast-to-noise under 3), more than the {kept} kept by contrast: "
            "low-contrast particles may be missing from these counts, or this is an empty area or noise. Check "
            "the outlines (a learned finder trained on micrographs like these may do better)")


def rescued_warning(rescued: int, kept: int) -> Optional[str]:
    """A warning when the ``rescued`` faint objects kept only for their sharp edges are at least as many
    as the ``kept`` particles found by their contrast or closed ring (and at least one); None otherwise.

    Why: on fields of white or shot noise nothing stands out by contrast, and what is found is a few
    noise blobs whose full-resolution edge happens to be sharp. Measured (BENCHMARKS.md "Fields of
    white noise"): :func:`faint_warning` left 9 of 36 noise fields unflagged, 1-7 "particles" each,
    and 7 of 27 on fields not looked at while choosing this rule; with it every one is flagged, and
    none of the 31 NanoShapes micrographs or 58 synthetic liposome fields is flagged by it.
    """
    if rescued < 1 or rescued < kept:
        return None
    return (f"{rescued} of the {rescued + kept} objects kept were too faint to keep by contrast and were kept only for "
            "their sharp edges: this is likely an empty area or noise, not particles. Check the outlines")


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks (edges cropped to a whole number of blocks)."""
    H, W = image.shape
    factor = min(factor, H, W)  # a micrograph thinner than a block is not binned past one pixel
    if factor <= 1:
        return image
    h, w = H // factor, W // factor
    crop = image[: h * factor, : w * factor]
    return crop.reshape(h, factor, w, factor).mean(axis=(1, 3), dtype=np.float32)


def _odd(n: float) -> int:
    k = max(3, int(round(n)))
    return k if k % 2 else k + 1


def _background(img: np.ndarray, d: float) -> np.ndarray:
    """The background under particles about ``d`` px across, for dark particles: a grey closing
    (the "rolling ball") of width ``2 d`` erases them and keeps the illumination and carbon
    texture, then a Gaussian of sigma ``d / 2`` smooths the result. Computed on a copy binned by
    about ``d / 8`` and interpolated back (a closing 200 px wide at full size would take minutes)."""
    factor = max(1, int(d // 8))
    small = _bin(img, factor)
    size = _odd(2 * d / factor)
    closed = ndimage.grey_closing(small, size=(size, size), mode="reflect")
    blurred = ndimage.gaussian_filter(closed, d / 2 / factor, mode="reflect")
    if factor == 1:
        return blurred
    # grid_mode: block i covers pixels [i * factor, (i + 1) * factor), as _bin made it.
    zoom = (img.shape[0] / blurred.shape[0], img.shape[1] / blurred.shape[1])
    out = ndimage.zoom(blurred, zoom, order=1, mode="nearest", grid_mode=True)
    return out[: img.shape[0], : img.shape[1]]


def _smoothed_noise(img: np.ndarray, sigma: float, native: Optional[bool] = None) -> float:
    """Standard deviation of pixel noise after a Gaussian of ``sigma`` px: the MAD of the image minus
    its 3x3 median (independent of how much of the field particles cover), times white noise's
    reduction by the Gaussian, 1 / (2 sqrt(pi) sigma)."""
    step = max(1, int(math.sqrt(img.size / 2**20)))  # a 1 Mpx subsample is plenty for a MAD
    sub = img[::step, ::step]
    residual = sub - ops.median3x3(sub, native=native)
    mad = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    return mad / (2.0 * math.sqrt(math.pi) * sigma)


def _background_noise(smooth: np.ndarray, threshold: float) -> float:
    """Spread of the smoothed, flattened background (pixels on the background side of
    ``threshold``): 1.4826 x their median absolute deviation, i.e. the standard deviation of what
    is left of noise and carbon texture after smoothing, robust to the particles' tails."""
    step = max(1, int(math.sqrt(smooth.size / 2**20)))  # a 1 Mpx subsample is plenty for a MAD
    values = smooth[::step, ::step]
    values = values[values >= threshold]
    if values.size < 16:
        return 0.0
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _foreground(img: np.ndarray, d: float, polarity: str, native: Optional[bool] = None):
    """Bool particle mask of a micrograph whose particles are about ``d`` px across (module doc, step 3),
    the smoothed, flattened image (particles negative), its background noise (std) and Otsu's
    threshold on it."""
    from skimage import filters, morphology

    sign = 1.0 if polarity == "dark" else -1.0
    sigma = max(1.0, d / 15.0)
    flat = sign * ops.median3x3(img, native=native)  # dark particles from here on
    flat = flat - _background(flat, d)
    smooth = ndimage.gaussian_filter(flat, sigma)
    try:
        t = filters.threshold_otsu(smooth)
    except ValueError:  # a constant image
        return np.zeros(img.shape, bool), smooth, 0.0, 0.0
    noise = _background_noise(smooth, t)
    footprint = morphology.disk(max(1, int(round(d / 20.0))))
    whole = fill_holes(morphology.closing(smooth < t, footprint))
    local = filters.threshold_local(smooth, _odd(1.5 * d), method="mean")
    separated = (smooth < t) & (smooth < local - NOISE_MULTIPLE * _smoothed_noise(img, sigma, native))
    separated = fill_holes(morphology.opening(separated, footprint))
    # Per object of the global mask: its locally separated version where that keeps most of it
    # (touching particles split along their brighter gaps), else the whole object (a membrane ring
    # whose lumen is as bright as the background keeps only its rim under the local test).
    labels, n = ndimage.label(whole)
    if n == 0:
        return whole, smooth, noise, t
    idx = np.arange(1, n + 1)
    kept = ndimage.sum_labels(separated, labels, idx) / np.maximum(ndimage.sum_labels(whole, labels, idx), 1)
    use_separated = np.concatenate([[False], kept >= SEPARATED_SHARE])
    fg = np.where(use_separated[labels], separated, whole)
    return morphology.opening(fg, footprint), smooth, noise, t


def edge_sharpness(smooth: np.ndarray, labels: np.ndarray, ring_px: int, count: int,
                   native: Optional[bool] = None) -> np.ndarray:
    """float64 (count,): how much of each object's contrast lies at its edge; NaN where it cannot be told.

    smooth: float32 (H, W), the smoothed, flattened image with particles negative (:func:`_foreground`);
    labels: int (H, W), objects 1..count (some may be absent: NaN); ring_px: r, px. For object k:
    (mean of the background within r outside it - mean of its own pixels within r of its edge) /
    (mean of the background 3r..6r out - the median of its pixels), background pixels counted only
    where no other object lies within 6r (:data:`FAR_RING`). About 1 for a particle
    whose darkening happens at its edge (a membrane ring: above 1); about 2r over the edge's width
    for a blotch darkening gradually. NaN when fewer than 4 r^2 such surrounding pixels exist
    (packed particles) or the surroundings are not brighter than the object.

    Per object, inside its box grown by 6r: time and memory scale with the objects, not the image.
    """
    out = np.full(count, np.nan)
    H, W = labels.shape
    near, far = FAR_RING
    reach = far * ring_px + 1
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        ys = slice(max(0, box[0].start - reach), min(H, box[0].stop + reach))
        xs = slice(max(0, box[1].start - reach), min(W, box[1].stop + reach))
        sub = labels[ys, xs]
        own = sub == k
        others = (sub > 0) & ~own
        from_own = ops.distance_transform_edt(~own, native=native)
        open_bg = ~(sub > 0)
        if others.any():
            open_bg &= ops.distance_transform_edt(~others, native=native) > far * ring_px
        surround = open_bg & (from_own > near * ring_px) & (from_own <= far * ring_px)
        if surround.sum() < 4 * ring_px * ring_px:
            continue
        outside = open_bg & (from_own <= ring_px)
        edge = own & (ops.distance_transform_edt(own, native=native) <= ring_px)
        values = smooth[ys, xs]
        contrast = float(values[surround].mean()) - float(np.median(values[own]))
        if not outside.any() or contrast <= 0:
            continue
        out[k - 1] = (float(values[outside].mean()) - float(values[edge].mean())) / contrast
    return out


def h_maxima(image: np.ndarray, h: float, native: Optional[bool] = None) -> np.ndarray:
    """Bool ``H x W``: the h-maxima of a float image, ``skimage.morphology.h_maxima(image, h) != 0``
    exactly (the same formula, including its guard against rounding), with the reconstruction by
    dilation from :func:`emclassify.ops.reconstruct_by_dilation` (native where available: 108 ms ->
    a few ms per 416 x 416 map; scikit-image's sorts every pixel)."""
    if h > np.ptp(image):
        return np.zeros(image.shape, bool)
    resolution = 2 * np.finfo(image.dtype).resolution * np.abs(image)
    return (image - ops.reconstruct_by_dilation(image - h - resolution, image, native=native)) >= h


def _split(fg: np.ndarray, d: float, native: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, dist): the foreground ``fg`` split into objects by a watershed of its distance map
    from h-maxima seeds, and that map (float64, px), which the diameter estimate reads too."""
    from skimage import segmentation

    dist = ops.distance_transform_edt(fg, native=native)
    peaks = h_maxima(ndimage.gaussian_filter(dist, 1.0), max(1.0, d / 12.0), native)
    markers, _ = ndimage.label(peaks)
    return segmentation.watershed(-dist, markers, mask=fg), dist


def _radii_and_areas(img: np.ndarray, guess: float, polarity: str, native: Optional[bool]):
    """(distance-transform maxima, areas, foreground mask) of the objects found in ``img`` at the
    particle scale ``guess`` (px of ``img``); None when nothing stands out."""
    fg = _foreground(img, guess, polarity, native)[0]
    if not fg.any():
        return None
    labels, dist = _split(fg, guess, native)
    n = int(labels.max())
    if n == 0:
        return None
    idx = np.arange(1, n + 1)
    inside = labels > 0  # SciPy sorts every pixel it is given: only the labelled ones (same result)
    radii = np.asarray(ndimage.maximum(dist[inside], labels[inside], idx))
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    keep = radii >= 2
    if not keep.any():
        return None
    return radii[keep], areas[keep], fg


def _weighted_median_diameter(radii: np.ndarray, areas: np.ndarray) -> float:
    """DIAMETER_PER_RADIUS x the area-weighted median radius: noise specks are many but small, so
    they must not set the scale."""
    order = np.argsort(radii)
    cumulative = np.cumsum(areas[order])
    return float(DIAMETER_PER_RADIUS * radii[order][int(np.searchsorted(cumulative, cumulative[-1] / 2))])


def _busiest_tiles(fg: np.ndarray, fg_factor: int, shape, side: int, count: int):
    """Up to ``count`` non-overlapping ``side``-px windows (slices of a ``shape`` image) holding the
    most foreground of ``fg`` (a mask of that image binned by ``fg_factor``)."""
    H, W = shape
    tiles = []
    for y in range(0, max(1, H - side + 1), side):
        for x in range(0, max(1, W - side + 1), side):
            sl = (slice(y, min(H, y + side)), slice(x, min(W, x + side)))
            window = fg[y // fg_factor : (y + side) // fg_factor, x // fg_factor : (x + side) // fg_factor]
            share = window.mean() if window.size else 0.0
            tiles.append((float(share), sl))
    tiles.sort(key=lambda t: -t[0])
    return [sl for _, sl in tiles[:count]]


def estimate_diameter(image: np.ndarray, polarity: str = "dark", native: Optional[bool] = None) -> Optional[float]:
    """Typical particle diameter (px) of a micrograph, or None when nothing stands out.

    :data:`DIAMETER_PER_RADIUS` times the area-weighted median of the distance-transform maxima of
    the objects found at a scale of 1/16 of the image side, on a copy binned to at most
    ``ESTIMATE_SIDE`` px, scaled back. Where that binning left the particles under
    ``2 * TARGET_DIAMETER_PX`` binned px (small particles in a large micrograph: an 8k x 8k field of
    80 px particles binned 8 times), the estimate is refined at a finer binning, on up to
    ``ESTIMATE_TILES`` windows of ``ESTIMATE_SIDE`` binned px where the first pass found the most
    particles, with the last estimate as the scale; up to ``ESTIMATE_REFINEMENTS`` times, until it
    moves by less than a tenth. The first pass alone made one synthetic field's particles (area-weighted
    median 94 px) 85, 99, 150 and 226 px on its 1k, 2k, 4k and 8k crops (BENCHMARKS.md). Where the
    first pass found one object across more than :data:`WHOLE_FIELD_SHARE` of the binned copy (small
    particles packed too closely for the binning), the windows are searched at full size first.
    """
    img = np.asarray(image, dtype=np.float32)
    factor = max(1, min(int(math.ceil(max(img.shape) / ESTIMATE_SIDE)), *img.shape))  # as _bin clamps it
    small = _bin(img, factor)
    found = _radii_and_areas(small, max(small.shape) / 16.0, polarity, native)
    if found is None:
        return None
    radii, areas, fg = found
    d = _weighted_median_diameter(radii, areas) * factor
    first_factor = factor

    def windows_estimate(finer: int, guess: float) -> Optional[float]:
        """The estimate on the busiest windows of ESTIMATE_SIDE binned px, binned by ``finer``,
        searched at the scale ``guess`` (px of the micrograph)."""
        pooled = [r for r in (_radii_and_areas(_bin(img[sl], finer), guess / finer, polarity, native)
                              for sl in _busiest_tiles(fg, first_factor, img.shape, ESTIMATE_SIDE * finer, ESTIMATE_TILES))
                  if r is not None]
        if not pooled:
            return None
        return _weighted_median_diameter(np.concatenate([r[0] for r in pooled]),
                                         np.concatenate([r[1] for r in pooled])) * finer

    if factor > 1 and d / factor > max(small.shape) * WHOLE_FIELD_SHARE:
        # One "particle" across much of the binned copy: particles packed closer than the binning
        # and its smoothing can separate (an 8k field of 24 px particles 79 px apart came out as
        # one 7,600 px object). Search windows at full size instead, at the first pass's relative scale.
        at_full_size = windows_estimate(1, ESTIMATE_SIDE / 16.0)
        if at_full_size is None:
            return None
        d, factor = at_full_size, 1
    for _ in range(ESTIMATE_REFINEMENTS):
        finer = min(factor, max(1, int(d // (2 * TARGET_DIAMETER_PX))))
        if finer == factor == first_factor:
            break  # the particles were large enough at the first binning
        refined = windows_estimate(finer, d)
        if refined is None:
            break
        factor, settled, d = finer, abs(refined / d - 1.0) < 0.1, refined
        if settled:
            break
    return float(d)


@dataclass(frozen=True)
class ClassicalFinder:
    """Threshold + watershed particle finder (module doc). All lengths in px of the micrograph.

    diameter_px: expected particle diameter; None estimates it per micrograph.
    min_diameter_px / max_diameter_px: equivalent-circle diameters outside are dropped (None:
    d/4 and 4d). exclude_border: drop particles cut by the micrograph's edge. min_score: the
    contrast score an object needs; sharp_min_score: the score an object whose edge is sharp at full
    resolution needs (step 5); min_edge_sharpness: the :func:`edge_sharpness` it needs;
    refine_outlines: move each outline onto the particle's own edge (module doc, step 6);
    find_rings: also find particles by a closed membrane ring (module doc, step 5); edge_rings: a ring
    cut by the micrograph's edge counts as closed by it.
    """

    diameter_px: Optional[float] = None
    polarity: str = "dark"
    min_diameter_px: Optional[float] = None
    max_diameter_px: Optional[float] = None
    exclude_border: bool = False
    min_score: float = MIN_SCORE
    sharp_min_score: float = SHARP_MIN_SCORE   # >= min_score: no faint object kept for its sharp edge
    min_edge_sharpness: float = MIN_EDGE_SHARPNESS   # 0: none dropped for a gradual edge
    refine_outlines: bool = True   # False: outlines where the smoothed threshold put them (step 6)
    find_rings: bool = True        # False: no particles found by their membrane ring alone (step 5)
    edge_rings: bool = True        # False: a ring must close within the micrograph
    # None: the native median, reconstruction and distance transform where the library is loaded (False:
    # SciPy's and scikit-image's, the same result; the benchmark compares them); not a setting of the run
    native: Optional[bool] = field(default=None, compare=False)

    name = "classical"

    def __post_init__(self) -> None:
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, got {self.polarity!r}")
        for key in ("diameter_px", "min_diameter_px", "max_diameter_px"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{key} must be a positive number of pixels, got {v!r}")

    def params(self) -> Dict:
        return {"finder": self.name, **{k: v for k, v in asdict(self).items() if k != "native"}}

    def find(self, image: np.ndarray, pixel_size_nm: Optional[float] = None) -> Detections:
        """Particles of one 2-D micrograph (see module doc)."""
        img = np.asarray(image, dtype=np.float32)
        if img.ndim != 2:
            raise ValueError(f"expected a 2-D micrograph, got shape {img.shape}")
        notes = []
        d = self.diameter_px or estimate_diameter(img, self.polarity, self.native)
        if d is None:
            det = measure(np.zeros(img.shape, np.int32), pixel_size_nm=pixel_size_nm)
            det.notes.append("nothing stands out from the background (flat image?)")
            return det
        if self.diameter_px is None:
            notes.append(f"particle diameter estimated at {d:.0f} px")
        factor = max(1, min(int(d // TARGET_DIAMETER_PX), *img.shape))  # as _bin clamps it
        work = _bin(img, factor)
        dw = d / factor
        fg, smooth, noise, threshold = _foreground(work, dw, self.polarity, self.native)
        labels = _split(fg, dw, self.native)[0]
        n = int(labels.max())
        idx = np.arange(1, n + 1)
        # Filters, at the working scale (areas in working px, limits converted).
        diam = 2.0 * np.sqrt(np.bincount(labels.ravel(), minlength=n + 1)[1:] / math.pi) * factor
        lo = self.min_diameter_px or max(4.0, d / 4.0)
        hi = self.max_diameter_px or 4.0 * d
        scores = _contrast_scores(smooth, labels, fg, noise, threshold)
        score_of = np.asarray([scores[k] for k in idx])
        sized = (diam >= lo) & (diam <= hi)
        keep = np.zeros(n + 1, bool)
        keep[1:] = sized & (score_of >= self.min_score)
        # faint objects that may still be particles, judged by their edge at full resolution below
        maybe = np.zeros(n + 1, bool)
        if self.sharp_min_score < self.min_score:
            maybe[1:] = sized & (score_of >= self.sharp_min_score) & ~keep[1:]
        too_big = int((diam > hi).sum())
        faint = int(sized.sum() - keep.sum())
        # the warning's counts are by the contrast score alone, as it was measured (faint_warning)
        flagged = faint_warning(int(keep.sum()), faint)
        if too_big:
            notes.append(f"{too_big} object(s) over {hi:.0f} px across dropped (clumps that could not be split?)")
        found = labels
        labels = np.where(keep[labels], labels, 0)
        if self.min_edge_sharpness > 0 and keep.any():
            # judged among the objects kept so far: a dropped speck is not a neighbour
            sharpness = edge_sharpness(smooth, labels, max(2, int(round(dw / 8))), n, self.native)
            gradual = np.zeros(n + 1, bool)
            gradual[1:] = keep[1:] & (sharpness < self.min_edge_sharpness)   # NaN: not told, kept
            if gradual.any():
                keep &= ~gradual
                notes.append(f"{int(gradual.sum())} object(s) with edges too gradual for a particle dropped "
                             f"(background blotches? edge sharpness under {self.min_edge_sharpness:g})")
        ringed = np.zeros(n + 1, bool)
        if self.find_rings:
            found, ringed, absorbed, ring_scores = _add_rings(work, found, keep, maybe, lo / factor, hi / factor,
                                                              self.polarity, self.native, self.edge_rings)
            scores.update(ring_scores)
            faint -= int(absorbed.sum())   # faint objects that became part of a ring were not dropped as faint
            grown = len(ringed) - len(keep)
            keep, maybe = np.pad(keep & ~absorbed, (0, grown)), np.pad(maybe & ~absorbed, (0, grown)) | ringed
        labels = np.where((keep | maybe)[found], found, 0)
        if factor > 1:  # each working pixel back to its factor x factor block, written in place
            h, w = labels.shape
            full = np.zeros(img.shape, np.int32)
            full[: h * factor, : w * factor].reshape(h, factor, w, factor)[...] = labels[:, None, :, None]
            labels = full
        by_contrast = int(keep.sum())   # before the faint objects' edges are judged
        rescued = rings_kept = 0
        if maybe.any():
            widths = {k: obj.relative_width() for k, obj in
                      object_profiles(img, labels, self.polarity, only=np.flatnonzero(maybe), native=self.native)}
            sharp = [k for k, width in widths.items() if width is not None and width < SHARP_EDGE_WIDTH]
            keep[sharp] = True
            rings_kept = int(ringed[sharp].sum())
            rescued = len(sharp) - rings_kept
            faint -= rescued
            labels = np.where(keep[labels], labels, 0)
            if rescued:
                notes.append(f"{rescued} faint object(s) kept for their sharp edges (contrast score "
                             f"{self.sharp_min_score:g} to {self.min_score:g})")
            if rings_kept:
                notes.append(f"{rings_kept} particle(s) found by a closed membrane ring alone (inside no darker than "
                             "the background: empty vesicles?)")
        if faint:
            notes.append(f"{faint} faint object(s) dropped (contrast score under {self.min_score})")
        if self.refine_outlines and keep.any():
            labels = move_outlines_to_edges(img, labels, self.polarity, native=self.native)[0]
        det = measure(labels, scores, pixel_size_nm)
        if self.exclude_border:
            det = without_border_particles(det, pixel_size_nm)
        det.notes.extend(notes)
        flagged = flagged or rescued_warning(rescued, by_contrast + rings_kept)
        if flagged:
            det.warnings.append(flagged)
        return det


def _add_rings(work: np.ndarray, found: np.ndarray, kept: np.ndarray, pending: np.ndarray, lo: float, hi: float,
               polarity: str, native: Optional[bool], edge_rings: bool = True):
    """The closed rings of ``work`` (:func:`emclassify.finding.rings.ring_objects`) added to ``found``.

    found: int (H, W), working scale, objects 1..n; kept / pending: bool (n + 1,), the objects the dark
    search keeps and those it may keep (faint ones whose edge is still to be judged); lo, hi: the
    diameters allowed, working px; edge_rings: rings cut by the micrograph's edge count, closed by it.
    A ring ``lo``..``hi`` across is added as object n+1.. unless kept
    objects cover more than :data:`RING_OVERLAP` of it (the dark search found that particle, or the
    ring is its edge or membrane). Pending objects lying mostly within an added ring (more than
    :data:`PENDING_INSIDE` of their area: the particle, found faintly) are absorbed into it, and where a
    ring overlaps a dropped object the ring wins.

    Returns (found with the rings, bool (n + m + 1,) marking the added objects, bool (n + 1,) marking
    the absorbed ones, their scores: label -> 1 - exp(-s / 3), s the ring's ridge strength in spreads,
    like the contrast score's cnr).
    """
    n = len(kept) - 1
    rings, strength = ring_objects(work, polarity, lo, native, edge_closes_up_to=hi if edge_rings else None)
    m = len(strength)
    if m == 0:
        return found, np.zeros(n + 1, bool), np.zeros(n + 1, bool), {}
    area = np.bincount(rings.ravel(), minlength=m + 1)
    # overlap of each (ring j, kept or pending object k) pair, and the share of k inside j
    on = (rings > 0) & (kept | pending)[found]
    pairs, inter = np.unique(rings[on].astype(np.int64) * (n + 1) + found[on], return_counts=True)
    j, k = pairs // (n + 1), pairs % (n + 1)
    share = inter / np.bincount(found.ravel(), minlength=n + 1)[k]
    blocking = kept[k]
    cover = np.bincount(j[blocking], weights=inter[blocking], minlength=m + 1)
    diam = 2.0 * np.sqrt(area / math.pi)
    added = (cover <= RING_OVERLAP * area) & (diam >= lo) & (diam <= hi)
    added[0] = False
    absorbed = np.zeros(n + 1, bool)
    absorbed[k[added[j] & ~blocking & (share > PENDING_INSIDE)]] = True
    renumber = np.zeros(m + 1, np.int64)
    renumber[added] = n + np.arange(1, int(added.sum()) + 1)
    new = renumber[rings]
    stays = (kept | pending)[found] & ~absorbed[found]
    out = np.where((new > 0) & ~stays, new, found).astype(found.dtype, copy=False)
    ringed = np.zeros(n + int(added.sum()) + 1, bool)
    ringed[n + 1:] = True
    scores = {int(renumber[r]): float(1.0 - math.exp(-strength[r - 1] / 3.0)) for r in np.flatnonzero(added)}
    return out, ringed, absorbed, scores


def _contrast_scores(smooth: np.ndarray, labels: np.ndarray, fg: np.ndarray, noise: float, threshold: float
                     ) -> Dict[int, float]:
    """Label -> 1 - exp(-cnr / 3) on the smoothed, flattened image (module doc).

    The contrast is that of the object's pixels beyond ``threshold`` (all of them where none are):
    hole filling makes a vesicle's lumen, as bright as the background when it is empty, part of the
    object but not of its contrast, and its median over all pixels called such vesicles faint
    (BENCHMARKS.md "Background blotches": F1 up to +0.03 on synthetic fields, NanoShapes and fields
    of noise unchanged)."""
    n = int(labels.max())
    if n == 0:
        return {}
    background = ~fg
    if background.sum() < 16:
        return {k: 1.0 for k in range(1, n + 1)}  # no background left to compare with
    idx = np.arange(1, n + 1)
    # SciPy sorts every pixel it is given: only the labelled ones (same result)
    dark = (labels > 0) & (smooth < threshold)
    with np.errstate(invalid="ignore"):
        medians = np.asarray(ndimage.median(smooth[dark], labels[dark], idx), np.float64)
    missing = ~np.isfinite(medians)
    if missing.any():   # objects with no pixel beyond the threshold: all of their pixels
        inside = np.isin(labels, idx[missing])
        medians[missing] = np.asarray(ndimage.median(smooth[inside], labels[inside], idx[missing]), np.float64)
    bg_median = float(np.median(smooth[background]))
    noise = noise or 1.0
    return {k: float(1.0 - math.exp(-abs(float(m) - bg_median) / noise / 3.0)) for k, m in enumerate(medians, 1)}
