"""The ``learned`` particle finder: a U-Net trained on outlined micrographs (``emclassify train-finder``).

Steps, on one greyscale micrograph:

1. **Scale.** The network knows the particle size it was trained on (the card's median
   diameter). When the user gives the particles' diameter (``diameter_px``) and it differs by
   more than 10 %, the micrograph is resampled so that they appear at the trained size; the maps
   are resampled back, so outlines are at the micrograph's own resolution. Otherwise it runs as
   is, and a warning says when the particles found are far from the trained size.
2. **Maps.** The micrograph is normalised (1st..99th percentile to -1..1) and the network
   predicts foreground probability and centre-ness per pixel (:mod:`.unet`), in tiles for large
   micrographs; with ``views=8``, averaged over the 8 rotations and reflections of each tile.
   A flat micrograph (no contrast) gets empty maps, hence no particles and a note: the network's
   maps of a blank input hold edge artefacts, not particles.
3. **Instances.** Seeds are the connected regions where centre-ness exceeds the seed threshold
   inside the foreground; a watershed on the inverted centre-ness grows them to the foreground's
   edge (:func:`instances_from_maps`), which separates touching particles along the valley
   between their centres. Objects smaller than the card's ``min_area_px`` are dropped, and so are
   those whose centre-ness never reaches the card's ``peak_threshold`` (a weak centre: on
   NanoShapes mostly debris, fragments at montage seams and unoutlined specks; chosen at training,
   :func:`~.training.choose_peak_threshold`).

**Contrast.** The network learnt the contrast of its training particles (the card's ``polarity``,
e.g. dark on a bright background). ``polarity`` says what the particles of these micrographs are;
a micrograph of the other contrast is inverted before the network sees it. Nothing detects the
wrong contrast by itself: shown NanoShapes micrographs inverted, a finder finds a few gaps between
particles with high scores, but on synthetic liposome fields of the right contrast it finds 1.2 to
2.4 times as many objects inverted as as given (rings enclose dark lumens), so no count rule tells
the two apart (BENCHMARKS.md "Particles of the other contrast").

``score`` of a particle: its mean foreground probability. Particles cut by the border are kept
and flagged (``exclude_border=True`` drops them), as in the classical finder. A micrograph whose
particles score well under those found on the finder's own micrographs is flagged
(:func:`score_warning`): on noise or empty areas the network outlines blobs it is unsure of.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
from scipy import ndimage

from ..defaults import FINDER_VIEWS, POLARITIES
from ..runtime import reuse_freed_memory
from .detections import Detections, measure, without_border_particles
from .finderfile import LoadedFinder, load_finder
from .unet import intensity_range, normalise_micrograph, predict_maps

RESCALE_TOLERANCE = 0.10      # a given diameter within 10 % of the trained one runs unresampled
SIZE_WARNING_FACTOR = 2.0     # warn when the found particles' median diameter is this far off
# Particles found on a micrograph are compared with those found on the finder's own micrographs
# (the card's detection scores) once there are this many: a median of fewer says little.
MIN_PARTICLES_COMPARED = 5


def score_warning(scores, floor: Optional[float]) -> Optional[str]:
    """A warning when the median detection score of a micrograph's particles (``scores``) is under
    ``floor``, the score 95 % of the particles found on the finder's own micrographs reached
    (:attr:`~.finderfile.FinderCard.score_floor`); None otherwise, with fewer than
    :data:`MIN_PARTICLES_COMPARED` particles, or without a floor.

    Why: on a field of pure noise a U-Net still outlines hundreds of blobs, but it is unsure of
    them. Measured on NanoShapes (5 folds, BENCHMARKS.md "Particles unlike the finder's own"): the
    held-out micrographs' medians were 0.907-0.975 against floors of 0.861-0.883, noise fields'
    0.71-0.83. It also flagged four synthetic liposome fields shown inverted to a finder trained on
    such fields (0.95-0.98 against 0.99), but not inverted NanoShapes micrographs (BENCHMARKS.md
    "Particles of the other contrast"): a hint, not a contrast check.
    """
    if floor is None or len(scores) < MIN_PARTICLES_COMPARED:
        return None
    median = float(np.median(np.asarray(scores, dtype=np.float64)))
    if median >= floor:
        return None
    return (f"these {len(scores)} particles are unlike those the finder was trained on: their median detection "
            f"score is {median:.2f}, where 95 % of the particles on its own micrographs scored {floor:.2f} or more "
            "(an empty area, noise, another kind of micrograph, or particles of the other contrast: see --polarity?): "
            "check the outlines before using these counts")


# Rows of the micrograph per pass of the per-particle statistics and per watershed band: bounded
# temporaries (the whole-image watershed converted an 8k micrograph's centre-ness to float64 twice,
# and np.bincount / ndimage.mean made full-size int64 and float64 copies: +1.8 GB, BENCHMARKS.md).
BAND_PIXELS = 1 << 22


def _rows_per_band(width: int, pixels: int) -> int:
    """Whole rows of ``width`` px in about ``pixels`` (at least one)."""
    return max(1, pixels // max(1, width))


def _row_bands(shape: Tuple[int, int], pixels: int) -> Iterator[slice]:
    """Slices of whole rows, about ``pixels`` each (at least one row)."""
    rows = _rows_per_band(shape[1], pixels)
    for r in range(0, shape[0], rows):
        yield slice(r, min(shape[0], r + rows))


def _banded_watershed(centre: np.ndarray, markers: np.ndarray, mask: np.ndarray, band_pixels: int) -> None:
    """The watershed of ``-centre`` from ``markers`` inside ``mask``, written into ``markers``.

    Run on bands of whole connected parts of the mask rather than on the whole image: a part's
    flooding never leaves it, and within a part the flooding visits its pixels in the whole-image
    run's order (the same values, seeds and pixels in the same raster order), so the labels are the
    same (tested; the 8k micrograph and NanoShapes maps of BENCHMARKS.md array for array), while each
    band's float64 copies are bounded by ``band_pixels`` plus one part. The one exception: seed
    pixels of exactly equal value, which scikit-image's heap orders arbitrarily in either run, may
    share a plateau between their particles differently.
    """
    from skimage.segmentation import watershed

    parts, n_parts = ndimage.label(mask)
    boxes = ndimage.find_objects(parts)
    rows = _rows_per_band(mask.shape[1], band_pixels)
    first = 0
    while first < n_parts:
        # labels number the parts in raster order, so their top rows never decrease
        top = boxes[first][0].start
        last, bottom, left, right = first, boxes[first][0].stop, boxes[first][1].start, boxes[first][1].stop
        while last + 1 < n_parts and boxes[last + 1][0].stop - top <= rows:
            last += 1
            b = boxes[last]
            bottom, left, right = max(bottom, b[0].stop), min(left, b[1].start), max(right, b[1].stop)
        box = (slice(top, bottom), slice(left, right))
        inside = parts[box]
        inside = (inside > first) & (inside <= last + 1)
        flooded = watershed(-centre[box], markers[box], mask=inside)
        markers[box][inside] = flooded[inside]
        first = last + 1


def instances_from_maps(foreground: np.ndarray, centre: np.ndarray, foreground_threshold: float = 0.5,
                        seed_threshold: float = 0.5, min_area_px: float = 0.0, peak_threshold: float = 0.0,
                        band_pixels: int = BAND_PIXELS) -> Tuple[np.ndarray, Dict[int, float]]:
    """Instance labels (int32, H x W) and label -> mean foreground probability (module doc, step 3).

    foreground, centre: float32 (H, W) in 0..1. An instance is kept when its area is at least
    ``min_area_px`` and its highest centre-ness at least ``peak_threshold`` (every instance has a
    seed above ``seed_threshold``, so a peak threshold at or below it changes nothing).
    Memory: the two maps, the label image, a bool mask and the mask's parts, plus temporaries bounded
    by bands of ``band_pixels`` (an 8k micrograph: 0.74 GB above the maps instead of 1.76, BENCHMARKS.md).
    """
    mask = foreground > foreground_threshold
    labels = np.zeros(mask.shape, np.int32)
    n = ndimage.label((centre > seed_threshold) & mask, output=labels)
    if n == 0:
        return labels, {}
    _banded_watershed(centre, labels, mask, band_pixels)
    del mask
    areas = np.zeros(n + 1, np.int64)
    sums = np.zeros(n + 1, np.float64)
    peaks = np.zeros(n + 1, np.float32)
    for rows in _row_bands(labels.shape, band_pixels):
        lab = labels[rows].ravel()
        areas += np.bincount(lab, minlength=n + 1)
        sums += np.bincount(lab, weights=foreground[rows].ravel(), minlength=n + 1)
        if peak_threshold > seed_threshold:
            np.maximum.at(peaks, lab, centre[rows].ravel())  # ufunc.at: ~40x faster than ndimage.maximum here
    drop = areas < min_area_px
    if peak_threshold > seed_threshold:
        drop |= peaks < peak_threshold
    drop[0] = False
    if drop.any():
        for rows in _row_bands(labels.shape, band_pixels):
            lab = labels[rows]
            lab[drop[lab]] = 0
    ids = np.nonzero(~drop[1:] & (areas[1:] > 0))[0] + 1
    return labels, {int(k): float(sums[k] / areas[k]) for k in ids}


_CACHE: Dict[Tuple[str, int, int], LoadedFinder] = {}
_CACHE_LOCK = threading.Lock()


def _loaded(path: str) -> LoadedFinder:
    """One load per file version per process (the finder is called once per micrograph)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_finder(p)
        return _CACHE[key]


@dataclass(frozen=True)
class LearnedFinder:
    """U-Net particle finder from a ``train-finder`` model file (module doc). Lengths in px.

    model: path of the finder model file. diameter_px: the particles' diameter in this
    micrograph, when known (step 1). exclude_border: drop particles cut by the edge. views: 8
    averages the maps over the micrograph's 8 rotations and reflections (step 2; 8 times the
    network's time for outlines closer to the drawn ones, BENCHMARKS.md "The learned finder").
    polarity: ``dark`` or ``bright``, the contrast of these micrographs' particles; None: that of
    the finder's training particles (module doc, "Contrast").
    """

    model: str
    diameter_px: Optional[float] = None
    exclude_border: bool = False
    views: int = 1
    polarity: Optional[str] = None
    native: Optional[bool] = field(default=None, compare=False)
    # A network in memory instead of a file (validation during training, cross-validation).
    preloaded: Optional[LoadedFinder] = field(default=None, compare=False, repr=False)

    name = "learned"

    def __post_init__(self) -> None:
        if self.views not in FINDER_VIEWS:
            raise ValueError(f"views must be one of {', '.join(map(str, FINDER_VIEWS))} (the micrograph's rotations and "
                             f"reflections averaged), got {self.views!r}")
        if self.polarity is not None and self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, got {self.polarity!r}")
        if self.preloaded is None:
            if not self.model:
                raise ValueError("the learned finder needs a finder model file (--finder-model, made by "
                                 "`emclassify train-finder`)")
            v = self.diameter_px
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"diameter_px must be a positive number of pixels, got {v!r}")
            _loaded(self.model)  # a missing or foreign file is refused now, not at the first micrograph
        if self.polarity is not None and self.loaded.card.polarity is None:
            raise ValueError("this finder file does not record the contrast of the particles it was trained on "
                             "(trained before emclassify recorded it, or on particles of mixed contrast): leave out "
                             "the polarity, or train the finder again")

    @property
    def inverts(self) -> bool:
        """Whether micrographs are inverted before the network sees them (``polarity`` is not the card's)."""
        return self.polarity is not None and self.polarity != self.loaded.card.polarity

    @property
    def loaded(self) -> LoadedFinder:
        return self.preloaded if self.preloaded is not None else _loaded(self.model)

    def params(self) -> Dict:
        lf = self.loaded
        return {"finder": self.name, "model": str(self.model), "model_sha256": lf.sha256,
                "diameter_px": self.diameter_px, "exclude_border": self.exclude_border, "views": self.views,
                "polarity": self.polarity}

    def scale(self) -> float:
        """The resampling factor the network's input gets (1.0 when none: module doc, step 1)."""
        trained = self.loaded.card.median_diameter_px
        if self.diameter_px is not None and abs(trained / self.diameter_px - 1.0) > RESCALE_TOLERANCE:
            return trained / self.diameter_px
        return 1.0

    def network_input(self, image: np.ndarray, invert: bool = False) -> np.ndarray:
        """float32 (h, w): what the network sees of ``image``, resampled by :meth:`scale`, normalised,
        and inverted when :attr:`inverts` (or, with ``invert``, when it does not)."""
        from skimage.transform import resize

        scale = self.scale()
        work = np.asarray(image)
        if scale != 1.0:
            shape = (max(1, round(work.shape[0] * scale)), max(1, round(work.shape[1] * scale)))
            work = resize(work.astype(np.float32, copy=False), shape, order=1, anti_aliasing=scale < 1,
                          preserve_range=True).astype(np.float32)
        norm = normalise_micrograph(work)
        if self.inverts != invert:
            np.negative(norm, out=norm)
        return norm

    def maps(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, float]:
        """(foreground, centre-ness, scale) at the micrograph's own size; scale is the resampling
        factor the network saw (1.0 when none)."""
        from skimage.transform import resize

        reuse_freed_memory()  # the tiles' activations, freed and allocated again per tile (batch's reason)
        img = np.asarray(image)
        if intensity_range(img) is None:  # a blank micrograph: the network's maps of it hold edge artefacts
            return np.zeros(img.shape, np.float32), np.zeros(img.shape, np.float32), 1.0
        scale = self.scale()
        fg, centre = predict_maps(self.loaded.net, self.network_input(img), native=self.native, views=self.views)
        if scale != 1.0:
            fg = resize(fg, img.shape, order=1, preserve_range=True).astype(np.float32)
            centre = resize(centre, img.shape, order=1, preserve_range=True).astype(np.float32)
        return fg, centre, scale

    def find(self, image: np.ndarray, pixel_size_nm: Optional[float] = None,
             thresholds: Optional[Tuple[float, float]] = None) -> Detections:
        """Particles of one 2-D micrograph (module doc). thresholds: (foreground, seed) instead of
        the card's (used when choosing them on validation micrographs)."""
        img = np.asarray(image)  # any numeric dtype: normalised into one float32 copy (memory, module doc)
        if img.ndim != 2:
            raise ValueError(f"expected a 2-D micrograph, got shape {img.shape}")
        fg, centre, scale = self.maps(img)
        det = self.detections(fg, centre, scale, pixel_size_nm, thresholds)
        if not det.particles and not fg.any():
            det.notes.append("nothing stands out from the background (flat image?)")
        return det

    def detections(self, fg: np.ndarray, centre: np.ndarray, scale: float = 1.0,
                   pixel_size_nm: Optional[float] = None, thresholds: Optional[Tuple[float, float]] = None,
                   peak_threshold: Optional[float] = None) -> Detections:
        """Steps 3 and the border rule, from maps made by :meth:`maps`. thresholds, peak_threshold:
        instead of the card's (used when choosing them)."""
        card = self.loaded.card
        fg_t, seed_t = thresholds or (card.foreground_threshold, card.seed_threshold)
        peak_t = card.peak_threshold if peak_threshold is None else peak_threshold
        labels, scores = instances_from_maps(fg, centre, fg_t, seed_t, card.min_area_px / scale ** 2, peak_t)
        det = measure(labels, scores, pixel_size_nm)
        if self.exclude_border:
            det = without_border_particles(det, pixel_size_nm)
        if scale != 1.0:
            det.notes.append(f"micrograph resampled by {scale:.2f} so that {self.diameter_px:g} px particles "
                             f"appear at the finder's trained {card.median_diameter_px:.0f} px")
        elif len(det.particles) >= 5:
            d = float(np.median([p.size.diameter_px for p in det.particles]))
            ratio = d / card.median_diameter_px
            if ratio > SIZE_WARNING_FACTOR or ratio < 1 / SIZE_WARNING_FACTOR:
                det.warnings.append(f"particles found are {d:.0f} px across but the finder was trained on "
                                 f"{card.median_diameter_px:.0f} px ones: give --particle-diameter so the "
                                 "micrograph is resampled, or train a finder on micrographs like these")
        unlike = score_warning([p.score for p in det.particles], card.score_floor)
        if unlike:
            det.warnings.append(unlike)
        return det
