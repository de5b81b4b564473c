"""``--mode auto``: the input mode chosen from the data, and why (recorded in the model card).

Rule (applied to the labelled images before training or cross-validation):

1. Masks for at least half of the images: ``crop`` (the mask's bounding box).
2. No (or few) masks: ``crop`` with its ``margin`` only when the margin crop of
   the median image still keeps the model's input size and no region falls under
   :data:`~emclassify.preprocess.MIN_REGION_SIDE`; otherwise ``surround`` (the
   whole image). Without a mask ``crop`` assumes every image carries ``margin``
   px of surrounding; on small particle images (e.g. 41×41 px) it left a 1×1 px
   region and the network saw constant inputs.

Why ``crop`` with masks, measured (BENCHMARKS.md): on NanoShapes ``surround``
scored higher in 5-fold group-aware CV (92.6 % vs 90.4 %) but far lower on 7
micrographs held out whole (79.9 % vs 86.6 %); until that disagreement is
understood the conservative mode (the seed's, and the one whose CV estimate held
up on new micrographs) stays the default.

``mask`` mode is never chosen automatically, and choosing it prints a note: on
particles of micrographs held out from training it scored below ``crop``
(BENCHMARKS.md, "Data nobody here prepared").

``--size auto``: the median side of the region the chosen mode keeps (the mask's bounding box,
the margin crop, or the whole image's longer side) rounded up to a multiple of 8, within
:data:`~emclassify.defaults.AUTO_SIZE_RANGE`. A network input larger than the particles only
interpolates them: on NanoShapes (median box 29 px) 32 px was as accurate as 48 at half the time.
When nearly all regions are squares of one side within that range (particle images cut to one
size, :data:`UNIFORM_SHARE`), that side itself: no resampling at all. Rounding 41×41 texture
particles up to 48 px blurred the texture they are told apart by (BENCHMARKS.md).
"""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .defaults import AUTO, AUTO_SIZE_RANGE, DEFAULT_MARGIN, DEFAULT_MODE, DEFAULT_SIZE
from .contrast import mask_contrast, polarity_record
from .io import ImageReadError, Sample, read_image
from .preprocess import MIN_REGION_SIDE, PreprocessConfig
from .segment import describe_mask_problems, mask_problem, mask_warnings

MASK_SHARE_FOR_CROP = 0.5
MASK_MODE_NOTE = ("mask mode generalises worse to micrographs not seen in training: on NanoShapes particles of 7 "
                  "held-out micrographs it scored 84.0 % vs 86.6 % for crop (BENCHMARKS.md); prefer --mode auto "
                  "or crop unless you have measured mask mode on held-out micrographs of your own")
SIZE_SAMPLE = 400  # images measured for the decision (a seeded sample of larger sets)
UNIFORM_SHARE = 0.9  # share of square regions of the median side that makes a set "one size"
MIN_CONFOUND_IMAGES = 5  # a class with fewer sampled images is not judged by class_confounds
# A "micrograph" whose longer side is at most this many times the 95th percentile of the model's training
# images is more likely one of those particle images (particle_image_warning). The bundled model's
# sample images (~200 px) are under it, NanoShapes' 416 px micrographs against its ~80 px crops far over.
PARTICLE_IMAGE_FACTOR = 1.5


def _seeded_sample(samples: Sequence[Sample], seed: int) -> Sequence[Sample]:
    """At most :data:`SIZE_SAMPLE` of ``samples``, a seeded random choice kept in their order."""
    if len(samples) <= SIZE_SAMPLE:
        return samples
    rng = np.random.default_rng(seed)
    return [samples[i] for i in sorted(rng.choice(len(samples), SIZE_SAMPLE, replace=False))]


@dataclass(frozen=True)
class Survey:
    """What a seeded sample of the training images and masks looks like, each file read once.

    sides: int (n, 2), (height, width) of the readable images among ``_seeded_sample(samples)``;
    longest: {class: [longer side, ...]} and types: {class: {dtype name}} of the labelled images among
    ``_seeded_sample(labelled samples)``; boxes: int (m,), the longer side of each nonempty mask's bounding
    box among ``_seeded_sample(masked samples)``; masks_looked and mask_problems ({check: masks},
    :func:`emclassify.segment.mask_warnings`) over the readable ones; contrasts: float64, each
    :func:`emclassify.contrast.mask_contrast` there that could be measured (mask of its image's shape).
    """

    sides: np.ndarray
    longest: Dict[str, List[int]]
    types: Dict[str, set]
    boxes: np.ndarray
    masks_looked: int
    mask_problems: Dict[str, int]
    contrasts: np.ndarray
    any_masks: bool


def _file_key(path) -> tuple:
    if path is None:
        return (None,)
    try:
        st = os.stat(path)
    except OSError:
        return (str(path),)
    return (str(path), st.st_mtime_ns, st.st_size)


def _survey(samples: Sequence[Sample], seed: int) -> Survey:
    images = _seeded_sample(samples, seed)
    labelled = _seeded_sample([s for s in samples if s.label is not None], seed)
    masked = _seeded_sample([s for s in samples if s.mask is not None], seed)
    in_images, in_labelled, in_masked = ({id(s) for s in group} for group in (images, labelled, masked))
    sides, boxes, contrasts = [], [], []
    longest: Dict[str, List[int]] = {}
    types: Dict[str, set] = {}
    problems: Dict[str, int] = {}
    looked = 0
    for s in samples:   # in the samples' order: each file of the three samples read once
        wanted = id(s) in in_images, id(s) in in_labelled, id(s) in in_masked
        if not any(wanted):
            continue
        try:
            img = read_image(s.path, checksum=False).array
        except ImageReadError:
            img = None
        if img is not None and wanted[0]:
            sides.append(img.shape[:2])
        if img is not None and wanted[1]:
            longest.setdefault(s.label, []).append(max(img.shape[:2]))
            types.setdefault(s.label, set()).add(str(img.dtype))
        if not wanted[2]:
            continue
        try:
            mask = read_image(s.mask, checksum=False).array != 0
        except ImageReadError:
            continue
        looked += 1
        if mask.any():
            ys, xs = np.nonzero(mask)
            boxes.append(max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1))
        for w in mask_warnings(mask):
            problems[mask_problem(w)] = problems.get(mask_problem(w), 0) + 1
        if img is not None and mask.shape == img.shape:
            diff = mask_contrast(img, mask)
            if diff is not None:
                contrasts.append(diff)
    return Survey(np.asarray(sides, dtype=np.int64).reshape(-1, 2), longest, types, np.asarray(boxes, dtype=np.int64),
                  looked, problems, np.asarray(contrasts, dtype=np.float64), bool(masked))


# The last surveys, by the samples' files (with their modification times and sizes: an edited file is
# another key, so a long-lived process such as the GUI never reuses a stale one) and the seed.
_SURVEYS: "OrderedDict[tuple, Survey]" = OrderedDict()
_SURVEYS_LOCK = threading.Lock()
SURVEYS_KEPT = 2


def survey(samples: Sequence[Sample], seed: int = 0) -> Survey:
    """:class:`Survey` of ``samples`` (at most ``SIZE_SAMPLE`` files of each kind read, each once), kept
    for the last :data:`SURVEYS_KEPT` sets asked about: the input decision (mode, size, notes) and
    ``train``'s card (sizes, contrast) survey the same set."""
    key = (tuple((_file_key(s.path), _file_key(s.mask), s.label) for s in samples), seed)
    with _SURVEYS_LOCK:
        if key in _SURVEYS:
            _SURVEYS.move_to_end(key)
            return _SURVEYS[key]
    found = _survey(samples, seed)
    with _SURVEYS_LOCK:
        _SURVEYS[key] = found
        while len(_SURVEYS) > SURVEYS_KEPT:
            _SURVEYS.popitem(last=False)
    return found


def image_side_stats(samples: Sequence[Sample], seed: int = 0) -> Dict:
    """Shorter/longer image sides (px) of the training images: median and 5th/95th percentiles, from a
    seeded sample of at most ``SIZE_SAMPLE`` images. Stored in the model card (``data.image_sides_px``)
    so ``batch`` can warn about images far outside what the model was trained on."""
    return side_stats(survey(samples, seed).sides)


def side_stats(sides: np.ndarray) -> Dict:
    """:func:`image_side_stats` of an int (n, 2) array of image (height, width); {} when empty."""
    sides = np.asarray(sides, dtype=np.int64).reshape(-1, 2)
    if not len(sides):
        return {}
    longer = sides.max(axis=1)
    shorter = sides.min(axis=1)
    return {"n": int(len(sides)), "longer_median": int(np.median(longer)),
            "longer_p95": int(np.percentile(longer, 95)), "shorter_p5": int(np.percentile(shorter, 5)),
            "shorter_median": int(np.median(shorter))}


def particle_contrast_stats(samples: Sequence[Sample], seed: int = 0) -> Dict:
    """The contrast of the masked training particles (:func:`emclassify.contrast.polarity_record`: how
    many were measured, the share darker than the ring around their mask, the polarity), from a seeded
    sample of at most ``SIZE_SAMPLE`` of them; {} without masks. Stored in the model card
    (``data.particle_contrast``) so ``batch`` can flag particles of the other contrast."""
    found = survey(samples, seed)
    return polarity_record(found.contrasts) if found.any_masks else {}


def training_data_summary(card_data: Dict) -> str:
    """One line on what a classifier's training images were like, from its card's ``data`` (what
    ``batch`` compares new images with: their size and their particles' contrast); "" when the card
    records neither (models made before)."""
    parts = []
    sides = card_data.get("image_sides_px") if isinstance(card_data, dict) else None
    if isinstance(sides, dict) and "shorter_median" in sides and "longer_median" in sides:
        parts.append(f"images of about {sides['shorter_median']}-{sides['longer_median']} px")
    contrast = card_data.get("particle_contrast") if isinstance(card_data, dict) else None
    if isinstance(contrast, dict) and contrast.get("particles"):
        darker = 100 * float(contrast.get("darker_share", 0.0))
        polarity = contrast.get("polarity")
        if polarity == "dark":
            parts.append(f"particles darker than their surroundings ({darker:.1f} % of them)")
        elif polarity == "bright":
            parts.append(f"particles brighter than their surroundings ({100 - darker:.1f} % of them)")
        else:
            parts.append(f"particles of mixed contrast ({darker:.1f} % darker than their surroundings)")
    return ", ".join(parts)


def trained_on_masks(preprocess: PreprocessConfig, training: Dict) -> bool:
    """Whether a model's network saw particles cut out by given masks in training: its input mode uses
    a mask (``crop``, ``mask``) and its training images had masks for at least
    :data:`MASK_SHARE_FOR_CROP` of them (the card's ``training.input_decision``). A card without that
    record (models made before it, the bundled one among them) counts as trained on masks when its mode
    uses them: a ``crop`` model trained on margin crops records its decision.

    preprocess: the card's :class:`PreprocessConfig`; training: the card's ``training`` dict.
    """
    if not preprocess.uses_mask:
        return False
    decision = training.get("input_decision") or {}
    images, with_mask = decision.get("images"), decision.get("with_mask")
    if not images or with_mask is None:
        return True
    return with_mask / images >= MASK_SHARE_FOR_CROP


def size_warning(height: int, width: int, stats: Dict) -> str:
    """A row warning when an image is far larger (or smaller) than the model's training images, else ""."""
    if not stats:
        return ""
    longer, shorter = max(height, width), min(height, width)
    if longer > 4 * stats["longer_p95"]:
        what = ("a whole micrograph? classify its particles with --micrographs" if longer >= 1024
                else "much larger than the training images")
    elif shorter * 4 < stats["shorter_p5"]:
        what = "much smaller than the training images"
    else:
        return ""
    return (f"image is {width}x{height} px but the model was trained on images of about "
            f"{stats['shorter_median']}-{stats['longer_median']} px ({what}): this prediction is unreliable")


def particle_image_warning(height: int, width: int, stats: Dict) -> str:
    """A warning for a file given as a whole micrograph that is about the size of the particle images
    the model was trained on (its longer side at most :data:`PARTICLE_IMAGE_FACTOR` times their 95th
    percentile), else "". Written without "; " (micrograph warnings are read back from the CSV)."""
    if not stats or max(height, width) > PARTICLE_IMAGE_FACTOR * stats["longer_p95"]:
        return ""
    return (f"the file is {width}x{height} px, about the size of the particle images the model was trained on "
            f"({stats['shorter_median']}-{stats['longer_median']} px): a particle image rather than a micrograph? "
            "Classify particle images without --micrographs")


def auto_size(median_region: int) -> int:
    """``--size auto`` for regions of median side ``median_region`` px (see the module doc)."""
    lo, hi = AUTO_SIZE_RANGE
    return int(min(hi, max(lo, 8 * math.ceil(max(median_region, 1) / 8))))


def _uniform_square_side(region_sides: np.ndarray) -> int:
    """The side S when at least :data:`UNIFORM_SHARE` of the regions (``N x 2`` px) are S x S, else 0."""
    if not len(region_sides):
        return 0
    square = region_sides[:, 0] == region_sides[:, 1]
    values, counts = np.unique(region_sides[square, 0], return_counts=True)
    if not len(values) or counts.max() < UNIFORM_SHARE * len(region_sides):
        return 0
    return int(values[counts.argmax()])


def class_confounds(samples: Sequence[Sample], seed: int = 0) -> List[str]:
    """Properties of the image files that alone tell a class apart, one sentence each: a class whose
    images' longer sides, or pixel types, share no value with those of every other class (in a seeded
    sample of at most ``SIZE_SAMPLE`` images; classes with fewer than :data:`MIN_CONFOUND_IMAGES` there
    are not judged).

    Why: classes exported separately (another session, another export setting) can differ in how the
    files were made rather than in their particles, and a network learns whatever tells them apart. On
    NanoShapes the three classes' crops overlap in size (30-168 px) and all are 8-bit: nothing is said.
    """
    found = survey(samples, seed)
    sides, types = found.longest, found.types
    judged = [c for c, v in sides.items() if len(v) >= MIN_CONFOUND_IMAGES]
    if len(judged) < 2:
        return []
    out = []
    for c in judged[:1] if len(judged) == 2 else judged:   # of two classes, one sentence says it
        rest = [o for o in judged if o != c]
        theirs = f"the '{rest[0]}' ones" if len(rest) == 1 else "those of the other classes"
        others = [v for o in rest for v in sides[o]]
        lo, hi = min(sides[c]), max(sides[c])
        if hi < min(others) or lo > max(others):
            out.append(f"the '{c}' images are {lo}-{hi} px (longer side), {theirs} {min(others)}-{max(others)} px: "
                       "a network can tell the classes apart by the image size alone")
        other_types = set().union(*(types[o] for o in rest))
        if not types[c] & other_types:
            out.append(f"the '{c}' images are {'/'.join(sorted(types[c]))}, {theirs} {'/'.join(sorted(other_types))}: "
                       "a network can tell the classes apart by how the files were made")
    if out:
        out.append("export every class the same way, or check that the model learnt the particles (saliency in the "
                   "Review view)")
    return out


def mask_problems_note(samples: Sequence[Sample], seed: int = 0) -> str:
    """The decision's note when masks of a seeded sample (at most ``SIZE_SAMPLE``) look like something
    else than one particle's (:func:`emclassify.segment.mask_warnings`: the background, several
    particles), else ""."""
    found = survey(samples, seed)
    return " ".join(f"{s}." for s in describe_mask_problems(found.mask_problems, f"of the {found.masks_looked} "
                                                            "masks looked at"))


def mixed_masks_note(with_mask: int, images: int, mode: str, margin: int) -> str:
    """The decision's note when only some training images have a mask: in ``crop`` / ``mask`` mode the
    others are cut another way, so the network learns two views of a particle."""
    other = f"as a central crop with a {margin} px margin" if mode == "crop" else "by automatic segmentation"
    return (f"{images - with_mask} of the {images} images have no mask: in {mode} mode they are cut {other}, the "
            f"{with_mask} with one by its mask, two views of a particle for the network to learn (and batch to meet). "
            "Give every image its mask, or leave out the images without one")


def decide_preprocess(samples: Sequence[Sample], mode: str = DEFAULT_MODE, size=DEFAULT_SIZE,
                      margin: int = DEFAULT_MARGIN,
                      normalize: str = "zscore", mean: float = 0.0, std: float = 1.0) -> Tuple[PreprocessConfig, Dict]:
    """The :class:`PreprocessConfig` to train with and a record of how ``mode`` and ``size`` were decided.

    mode, size: a value, or ``"auto"`` (module doc). The record keeps the measurements (median image
    side, median mask box) that micrograph runs use to cut particles as the model saw them.
    """
    n = len(samples)
    with_mask = sum(1 for s in samples if s.mask is not None)
    share = with_mask / n if n else 0.0
    masked = share >= MASK_SHARE_FOR_CROP
    record: Dict = {"requested": mode, "images": n, "with_mask": with_mask}
    measure = AUTO in (mode, size)
    sides = survey(samples).sides if measure else np.zeros((0, 2), np.int64)
    if len(sides):
        record["median_image_side"] = int(np.median(sides.min(axis=1)))
    if measure and masked:
        boxes = survey(samples).boxes
        record["median_mask_box"] = int(np.median(boxes)) if len(boxes) else 0
    # the input side a margin crop is compared with, before the input size itself is decided
    target = AUTO_SIZE_RANGE[1] if size == AUTO else size
    cropped = sides - 2 * np.minimum(margin, (sides - 1) // 2)  # each image's margin crop, h x w
    regions = cropped.min(axis=1) if len(sides) else np.zeros(0)
    median_crop = int(np.median(regions)) if len(regions) else 0
    if mode != AUTO:
        chosen, reason = mode, "given explicitly"
        if mode == "mask":
            record["note"] = MASK_MODE_NOTE
    elif masked:
        chosen = "crop"
        reason = f"masks found for {100 * share:.0f} % of the images: the mask's bounding box"
    else:
        record["median_crop_region"] = median_crop
        if median_crop >= target and len(regions) and int(regions.min()) >= MIN_REGION_SIDE:
            chosen = "crop"
            reason = (f"no masks; a {margin} px margin crop keeps {median_crop} px (median), at least the "
                      f"{target} px input")
        else:
            chosen = "surround"
            reason = (f"no masks; a {margin} px margin crop would keep only {median_crop} px (median) of the "
                      f"{target} px input: the whole image is used")
    record.update(chosen=chosen, reason=reason)
    notes = [record.get("note"), mask_problems_note(samples) if with_mask else ""]
    if chosen in ("crop", "mask") and 0 < with_mask < n:
        notes.append(mixed_masks_note(with_mask, n, chosen, margin))
    confounds = class_confounds(samples)
    if confounds:
        advice = confounds[-1]
        notes.append("; ".join(confounds[:-1]) + ". " + advice[:1].upper() + advice[1:])
    if any(notes):
        record["note"] = " ".join(filter(None, notes))
    if size == AUTO:
        if chosen != "surround" and masked:
            median, what = record["median_mask_box"], "mask bounding box"
        elif chosen != "surround":
            median, what = median_crop, "margin crop"
        else:
            median, what = (int(np.median(sides.max(axis=1))) if len(sides) else 0), "whole image (longer side)"
        lo, hi = AUTO_SIZE_RANGE
        # mask boxes vary by particle and are never "one size"
        uniform = 0 if masked else _uniform_square_side(sides if chosen == "surround" else cropped)
        if uniform and lo <= uniform <= hi:
            size = uniform
            record["size"] = {"chosen": size, "median_region": median,
                              "reason": f"at least {100 * UNIFORM_SHARE:.0f} % of the images give the same {size}x{size} "
                                        "px region: that size, without resampling"}
        elif median > 0:
            size = auto_size(median)
            record["size"] = {"chosen": size, "median_region": median,
                              "reason": f"median {what} {median} px, rounded up to a multiple of 8 within {lo}-{hi} px"}
        else:
            size = hi
            record["size"] = {"chosen": size, "reason": "no region could be measured: the largest automatic size"}
    return PreprocessConfig(mode=chosen, size=size, margin=margin, normalize=normalize, mean=mean, std=std), record


def describe(pcfg: PreprocessConfig, record: Dict) -> str:
    """One line saying which input was chosen and why (printed by the CLI, logged by the GUI)."""
    sized = f" ({record['size']['reason']})" if record.get("size") else ""
    return f"input: mode {pcfg.mode} ({record['reason']}), {pcfg.size}x{pcfg.size} px{sized}, {pcfg.normalize}"


__all__ = ["AUTO", "DEFAULT_MARGIN", "DEFAULT_MODE", "DEFAULT_SIZE", "auto_size", "class_confounds", "decide_preprocess",
           "describe", "image_side_stats", "mask_problems_note", "mixed_masks_note", "particle_contrast_stats",
           "particle_image_warning", "side_stats", "size_warning", "survey", "trained_on_masks", "training_data_summary"]
