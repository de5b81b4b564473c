"""Each particle's own edge, measured at full resolution: where it lies (the classical finder's
outlines are moved onto it) and how wide it is (faint objects with a sharp edge are kept).

Why: the classical finder thresholds a micrograph smoothed at the particles' scale (sigma ``d / 15``
at its working scale: 5-6 px on 80-100 px vesicles), and a thin dark membrane smoothed that much
crosses the threshold on its Gaussian tail, several pixels outside the membrane. Its outlines ran a
median 8-17 % too large in area on synthetic lamellar vesicles, 13 % too small on vesicles with dark
content and 22 % on the NanoShapes nanocrystals, and a crop-mode classifier then saw the vesicles smaller than its training particles
(74 % of the matched vesicles right against 89 % from the drawn outlines on one set;
BENCHMARKS.md "Outlines on the particle's own edge").

How, per found object, at full resolution and inside the object's box (memory and time scale with
the particles, not the micrograph): the micrograph, 3x3-median filtered and smoothed by
:data:`PROFILE_SMOOTH_PX`, is averaged over shells of equal signed distance from the found outline
(:data:`PROFILE_STEP_PX` apart, from ``-SHRINK_LIMIT * d`` inside to ``PROFILE_REACH * d`` outside;
``d`` the object's equivalent-circle diameter). Outside pixels count only where they are nearer to
this object than to any other, and the distance inside is to the background, so the line along which
the watershed split two touching particles is not an edge and stays where it is. The profile's
background ``B`` is its median beyond ``BACKGROUND_FROM * d``, the particle's darkest level ``M`` its
minimum up to ``0.05 d`` outside; the edge is the first crossing of ``B - EDGE_LEVEL * (B - M)``
going out from that minimum, and the object is shrunk to it or grown to it (into background nearer to
it than to any other object), by at most ``SHRINK_LIMIT * d`` / ``GROW_LIMIT * d``. An object whose
profile shows no edge (no background brighter than it, nothing to compare with) keeps its outline.

A perimeter-averaged profile is robust where a per-pixel threshold is not: a membrane ring with a
faint stretch or a gap still has one edge on average, and noise averages away over hundreds of
pixels. The one assumption is that the threshold's outline is off by about the same distance all
round, which smoothing makes true.

The same profile gives the edge's width (:meth:`ObjectProfile.relative_width`: the distance between
the crossings of 20 % and 80 % of the contrast, over ``d``): a few pixels for a membrane or a
particle's boundary (0.04-0.08 d on synthetic vesicles), a quarter of the diameter for noise blobs
and background texture (BENCHMARKS.md "Faint vesicles with sharp edges").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Tuple

import numpy as np
from scipy import ndimage

from .. import ops

# The edge is where the profile has come this share of the way from the background to the particle's
# darkest level. Drawn outlines sit near the foot of an edge: at 0.35 (IQR 0.30-0.41) of the contrast
# on synthetic lamellar vesicles, 0.20 on vesicles with dark content, 0.29 (IQR 0.15-0.40) on the
# NanoShapes crystals (measured on each drawn outline's own profile). 0.4 keeps each of those sets'
# median area within 10 % of the drawn one and the bundled lamellarity model at its best (BENCHMARKS.md).
EDGE_LEVEL = 0.4
PROFILE_SMOOTH_PX = 1.0   # Gaussian sigma before the profile: shot noise, without moving a thin membrane's edge
PROFILE_STEP_PX = 0.5     # shell width of the profile
PROFILE_REACH = 0.3       # the profile runs this many diameters outside the found outline
BACKGROUND_FROM = 0.15    # ... and its background is taken from this many diameters out
SHRINK_LIMIT = 0.25       # an outline moves inwards by at most this many diameters
GROW_LIMIT = 0.15         # ... and outwards by at most this many
MIN_KEPT_SHARE = 0.3      # an object shrunk below this share of its area keeps its outline (a rod's width)
MIN_SHELL_PIXELS = 3      # a profile shell with fewer pixels is not used
# An edge's width: the distance between the crossings of these shares of the contrast
# (ObjectProfile.relative_width); the classical finder keeps faint objects whose edge is sharp.
WIDTH_LEVELS = (0.2, 0.8)


def edge_offset(profile: np.ndarray, counts: np.ndarray, centres: np.ndarray, d: float,
                level: float = EDGE_LEVEL) -> Optional[float]:
    """Signed distance (px, + outwards) from the found outline to the particle's edge, or None.

    profile: float64 (n,), mean of the smoothed image (particles darker) per shell; counts: int (n,),
    pixels per shell; centres: float64 (n,), the shells' signed distances, increasing; d: the
    object's equivalent-circle diameter, px.
    """
    valid = counts >= MIN_SHELL_PIXELS
    background = valid & (centres >= BACKGROUND_FROM * d)
    core = valid & (centres <= 0.05 * d)
    if background.sum() < 2 or not core.any():
        return None
    B = float(np.median(profile[background]))
    i_min = int(np.flatnonzero(core)[np.argmin(profile[core])])
    M = float(profile[i_min])
    if not B > M:
        return None
    threshold = B - level * (B - M)
    previous = i_min
    for i in range(i_min + 1, len(profile)):
        if not valid[i]:
            continue
        if profile[i] >= threshold:   # crossed between the last valid shell and this one
            lo, hi = profile[previous], profile[i]
            t = (threshold - lo) / (hi - lo) if hi > lo else 1.0
            return float(centres[previous] + t * (centres[i] - centres[previous]))
        previous = i
    return None


@dataclass
class ObjectProfile:
    """One object's edge profile (module doc) and the geometry to move its outline with.

    profile: float64 (n,), mean of the smoothed crop (particles darker) per shell; counts: int (n,),
    pixels per shell; centres: float64 (n,), the shells' signed distances from the found outline, px,
    increasing; d: the object's equivalent-circle diameter, px; window: the crop's (rows, cols)
    slices; own: bool, the object's pixels in the crop; nearer_own: bool, background pixels of the
    crop nearer to it than to any other object; signed: float64, each crop pixel's signed distance.
    """

    profile: np.ndarray
    counts: np.ndarray
    centres: np.ndarray
    d: float
    window: Tuple[slice, slice]
    own: np.ndarray
    nearer_own: np.ndarray
    signed: np.ndarray

    def crossing(self, level: float = EDGE_LEVEL) -> Optional[float]:
        return edge_offset(self.profile, self.counts, self.centres, self.d, level)

    def relative_width(self) -> Optional[float]:
        """How wide the edge is, as a share of the diameter: the distance between the crossings of
        :data:`WIDTH_LEVELS` of the contrast over ``d``; None where either cannot be told."""
        inner, outer = (self.crossing(level) for level in sorted(WIDTH_LEVELS, reverse=True))
        if inner is None or outer is None:
            return None
        return (outer - inner) / self.d


def object_profiles(image: np.ndarray, labels: np.ndarray, polarity: str = "dark",
                    only: Optional[Iterable[int]] = None, native: Optional[bool] = None) -> Iterator[Tuple[int, ObjectProfile]]:
    """(label, :class:`ObjectProfile`) of each object of ``labels`` (or of those in ``only``) that has
    background within reach; objects with none are skipped.

    image: (H, W), any real dtype, the micrograph at full resolution; labels: int (H, W), objects
    1..n (0 background); polarity: ``dark`` or ``bright`` particles. Per object, inside its box
    grown by ``PROFILE_REACH * d``: time and memory scale with the particles, not the micrograph.
    """
    sign = np.float32(1.0 if polarity == "dark" else -1.0)
    wanted = None if only is None else set(int(k) for k in only)
    H, W = labels.shape
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or (wanted is not None and k not in wanted):
            continue
        area = int(np.count_nonzero(labels[box] == k))
        d = 2.0 * math.sqrt(area / math.pi)
        reach = int(math.ceil(PROFILE_REACH * d)) + 3
        ys = slice(max(0, box[0].start - reach), min(H, box[0].stop + reach))
        xs = slice(max(0, box[1].start - reach), min(W, box[1].stop + reach))
        sub = labels[ys, xs]
        own = sub == k
        objects = sub > 0
        if objects.all():
            continue   # no background in reach: nothing to place an edge against
        values = np.ascontiguousarray(image[ys, xs], dtype=np.float32) * sign
        smooth = ndimage.gaussian_filter(ops.median3x3(values, native=native), PROFILE_SMOOTH_PX)
        from_own = ops.distance_transform_edt(~own, native=native)
        others = objects & ~own
        nearer_own = ~objects
        if others.any():
            nearer_own &= from_own < ops.distance_transform_edt(~others, native=native)
        # pixel centres: the outline lies half a pixel beyond the last pixel inside
        signed = np.where(own, 0.5 - ops.distance_transform_edt(objects, native=native), from_own - 0.5)
        lo, hi = -SHRINK_LIMIT * d, PROFILE_REACH * d
        used = (own | nearer_own) & (signed >= lo) & (signed <= hi)
        shell = ((signed[used] - lo) / PROFILE_STEP_PX).astype(np.int64)
        n = int(math.floor((hi - lo) / PROFILE_STEP_PX)) + 1
        counts = np.bincount(shell, minlength=n)
        profile = np.bincount(shell, weights=smooth[used], minlength=n) / np.maximum(counts, 1)
        centres = lo + (np.arange(n) + 0.5) * PROFILE_STEP_PX
        yield k, ObjectProfile(profile, counts, centres, d, (ys, xs), own, nearer_own, signed)


def move_outlines_to_edges(image: np.ndarray, labels: np.ndarray, polarity: str = "dark",
                           level: float = EDGE_LEVEL, native: Optional[bool] = None) -> Tuple[np.ndarray, int]:
    """``labels`` with each object's outline moved onto its own edge (module doc), and how many moved.

    image: (H, W), any real dtype, the micrograph at full resolution; labels: int (H, W), objects
    1..n (0 background), the same size; polarity: ``dark`` or ``bright`` particles. Returns a new
    int32 label image with the same label values (an object is never removed) and the count of
    objects whose outline was moved.
    """
    out = np.array(labels, dtype=np.int32, copy=True)
    moved = 0
    for k, obj in object_profiles(image, labels, polarity, native=native):
        offset = obj.crossing(level)
        if offset is None:
            continue
        offset = min(max(offset, -SHRINK_LIMIT * obj.d), GROW_LIMIT * obj.d)
        region = out[obj.window]
        if offset < 0:
            drop = obj.own & (obj.signed >= offset)
            area = int(np.count_nonzero(obj.own))
            if area - np.count_nonzero(drop) < MIN_KEPT_SHARE * area:
                continue
            region[drop] = 0
        else:
            region[obj.nearer_own & (obj.signed < offset)] = k
        moved += 1
    return out, moved
