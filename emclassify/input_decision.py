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
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from .defaults import AUTO, DEFAULT_MARGIN, DEFAULT_MODE, DEFAULT_SIZE
from .io import ImageReadError, Sample, read_image
from .preprocess import MIN_REGION_SIDE, PreprocessConfig

MASK_SHARE_FOR_CROP = 0.5
MASK_MODE_NOTE = ("mask mode generalises worse to micrographs not seen in training: on NanoShapes particles of 7 "
                  "held-out micrographs it scored 84.0 % vs 86.6 % for crop (BENCHMARKS.md); prefer --mode auto "
                  "or crop unless you have measured mask mode on held-out micrographs of your own")
SIZE_SAMPLE = 400  # images measured for the decision (a seeded sample of larger sets)


def _image_sides(samples: Sequence[Sample], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pick = samples if len(samples) <= SIZE_SAMPLE else [samples[i] for i in
                                                        sorted(rng.choice(len(samples), SIZE_SAMPLE, replace=False))]
    sides = []
    for s in pick:
        try:
            img = read_image(s.path, checksum=False).array
        except ImageReadError:
            continue
        sides.append(img.shape)
    return np.asarray(sides, dtype=np.int64).reshape(-1, 2)


def image_side_stats(samples: Sequence[Sample], seed: int = 0) -> Dict:
    """Shorter/longer image sides (px) of the training images: median and 5th/95th percentiles, from a
    seeded sample of at most ``SIZE_SAMPLE`` images. Stored in the model card (``data.image_sides_px``)
    so ``batch`` can warn about images far outside what the model was trained on."""
    sides = _image_sides(samples, seed)
    if not len(sides):
        return {}
    longer = sides.max(axis=1)
    shorter = sides.min(axis=1)
    return {"n": int(len(sides)), "longer_median": int(np.median(longer)),
            "longer_p95": int(np.percentile(longer, 95)), "shorter_p5": int(np.percentile(shorter, 5)),
            "shorter_median": int(np.median(shorter))}


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
            f"{stats['shorter_median']}-{stats['longer_median']} px ({what}); this prediction is unreliable")


def _mask_regions(samples: Sequence[Sample], seed: int = 0) -> np.ndarray:
    """Longer side (px) of the mask's bounding box for a seeded sample of the masked images."""
    rng = np.random.default_rng(seed)
    masked = [s for s in samples if s.mask is not None]
    if len(masked) > SIZE_SAMPLE:
        masked = [masked[i] for i in sorted(rng.choice(len(masked), SIZE_SAMPLE, replace=False))]
    out = []
    for s in masked:
        try:
            m = read_image(s.mask, checksum=False).array != 0
        except ImageReadError:
            continue
        if m.any():
            ys, xs = np.nonzero(m)
            out.append(max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1))
    return np.asarray(out, dtype=np.int64)


def decide_preprocess(samples: Sequence[Sample], mode: str = DEFAULT_MODE, size: int = DEFAULT_SIZE,
                      margin: int = DEFAULT_MARGIN,
                      normalize: str = "zscore", mean: float = 0.0, std: float = 1.0) -> Tuple[PreprocessConfig, Dict]:
    """The :class:`PreprocessConfig` to train with and a record of how ``mode`` was decided."""
    n = len(samples)
    with_mask = sum(1 for s in samples if s.mask is not None)
    share = with_mask / n if n else 0.0
    record: Dict = {"requested": mode, "images": n, "with_mask": with_mask}
    if mode != AUTO:
        record.update(chosen=mode, reason="given explicitly")
        if mode == "mask":
            record["note"] = MASK_MODE_NOTE
        return PreprocessConfig(mode=mode, size=size, margin=margin, normalize=normalize, mean=mean, std=std), record
    sides = _image_sides(samples)
    masked = share >= MASK_SHARE_FOR_CROP
    if len(sides):
        record["median_image_side"] = int(np.median(sides.min(axis=1)))
    if masked:
        boxes = _mask_regions(samples)
        record["median_mask_box"] = int(np.median(boxes)) if len(boxes) else 0
        chosen = "crop"
        reason = f"masks found for {100 * share:.0f} % of the images: the mask's bounding box"
    else:
        regions = (sides - 2 * np.minimum(margin, (sides - 1) // 2)).min(axis=1) if len(sides) else np.zeros(0)
        median_region = int(np.median(regions)) if len(regions) else 0
        record["median_crop_region"] = median_region
        if median_region >= size and len(regions) and int(regions.min()) >= MIN_REGION_SIDE:
            chosen = "crop"
            reason = (f"no masks; a {margin} px margin crop keeps {median_region} px (median), at least the "
                      f"{size} px input")
        else:
            chosen = "surround"
            reason = (f"no masks; a {margin} px margin crop would keep only {median_region} px (median) of the "
                      f"{size} px input: the whole image is used")
    record.update(chosen=chosen, reason=reason)
    return PreprocessConfig(mode=chosen, size=size, margin=margin, normalize=normalize, mean=mean, std=std), record


__all__ = ["AUTO", "DEFAULT_MARGIN", "DEFAULT_MODE", "DEFAULT_SIZE", "decide_preprocess", "image_side_stats",
           "size_warning"]
