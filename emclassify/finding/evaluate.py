"""How well a finder finds the particles of outlined micrographs: ``emclassify find-eval``.

Input layout (that of NanoShapes micrographs and of ``emclassify synth --micrographs``):
``FOLDER/images/<name>.<ext>`` and ``FOLDER/instances/<name>.tif`` (0 background, k > 0 the
pixels of particle k). Per micrograph and over all: found, true and matched particles at IoU >=
0.5, precision, recall, F1, the mean IoU of matched particles and the count error
(:mod:`.matching`). A micrograph whose instance image is missing or of another size is reported
as an error and left out of the figures; the run goes on.
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..io import IMAGE_EXTENSIONS, ImageReadError, read_image
from .matching import InstanceMatch, match_instances, summarise


class EvaluationError(Exception):
    """The folder cannot be evaluated; the message says why."""


def outlined_micrographs(folder) -> List[tuple]:
    """(image path, instance path) pairs of a folder in the layout of the module doc."""
    folder = Path(folder)
    images, instances = folder / "images", folder / "instances"
    if not images.is_dir() or not instances.is_dir():
        raise EvaluationError(f"{folder}: expected images/ and instances/ folders (micrographs and their "
                              "instance label images of the same names)")
    pairs = []
    for p in sorted(images.iterdir()):
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            pairs.append((p, instances / f"{p.stem}.tif"))
    if not pairs:
        raise EvaluationError(f"{images}: no micrographs found")
    return pairs


def overlay_png(image: np.ndarray, found: np.ndarray, truth: np.ndarray) -> bytes:
    """PNG of the micrograph with found outlines in red and outlined particles in green."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    img = image.astype(np.float32)
    lo, hi = np.percentile(img, [1, 99])
    grey = np.clip((img - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[find_boundaries(truth, mode="inner")] = (40, 220, 40)
    rgb[find_boundaries(found, mode="inner")] = (240, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def evaluate_finder(folder, finder, overlays=None, progress: Optional[Callable[[int, int], None]] = None) -> Dict:
    """Run ``finder`` on every outlined micrograph under ``folder``; return the metrics dict.

    overlays: a folder for one ``<name>.png`` per micrograph (found red, outlined green).
    """
    from ..atomic import write_bytes_atomic

    pairs = outlined_micrographs(folder)
    per, matches, errors = [], [], []
    start = time.perf_counter()
    pixels = 0
    for i, (image_path, instance_path) in enumerate(pairs, 1):
        rel = image_path.relative_to(folder).as_posix()
        try:
            image = read_image(image_path).array
            truth = read_image(instance_path, checksum=False, with_pixel_size=False).array.astype(np.int64)
        except ImageReadError as exc:
            errors.append({"micrograph": rel, "error": str(exc)})
            continue
        if truth.shape != image.shape:
            errors.append({"micrograph": rel, "error": f"instance image is {truth.shape[1]}x{truth.shape[0]} px, "
                                                        f"the micrograph {image.shape[1]}x{image.shape[0]} px"})
            continue
        det = finder.find(image)
        m: InstanceMatch = match_instances(det.labels, truth)
        matches.append(m)
        pixels += image.size
        per.append({"micrograph": rel, **{k: v for k, v in summarise([m]).items() if k != "micrographs"},
                    "notes": det.notes})
        if overlays is not None:
            write_bytes_atomic(Path(overlays) / f"{image_path.stem}.png", overlay_png(image, det.labels, truth))
        if progress:
            progress(i, len(pairs))
    elapsed = time.perf_counter() - start
    return {"folder": str(folder), "finder": finder.params(), "iou_threshold": 0.5,
            "overall": summarise(matches), "per_micrograph": per, "errors": errors,
            "seconds": round(elapsed, 2), "megapixels_per_s": round(pixels / 1e6 / elapsed, 3) if elapsed else None}
