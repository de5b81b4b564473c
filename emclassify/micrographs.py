"""Whole micrographs in, one row per particle out: find, cut out, measure and classify.

:func:`classify_micrographs` is the micrograph counterpart of
:func:`emclassify.inference.classify_folder` and yields the same :class:`BatchResult`, one per
micrograph, so :class:`emclassify.batch.BatchRun` (CSV, summary, resume, GUI) runs both. Per
micrograph:

1. decode it (any format :func:`emclassify.io.read_image` reads; pixel size from its metadata
   unless ``pixel_size_nm`` overrides it);
2. find the particles (a finder from :mod:`emclassify.finding`, chosen by name);
3. cut each out as the classifier was trained to see particles (:func:`crop_context`: its box
   plus the surround its training images had), with its own mask (neighbours outside it);
4. classify the particles in batches; a particle whose region is under the classifier's
   minimum becomes an error row, a particle cut by the micrograph's edge gets a warning.

The next micrographs are decoded and searched in a background thread while the current one is
classified: up to :data:`FIND_AHEAD` of them while the micrographs are small (at most
:data:`FIND_AHEAD_MAX_PX` pixels), one otherwise, so memory holds at most ``FIND_AHEAD + 1``
micrographs at a time whatever their number, and two in a folder of large ones. While the search
runs beside it, classification uses one CPU thread fewer (:func:`emclassify.runtime.cpu_threads_beside`).
"""
from __future__ import annotations

import csv
import io
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Dict, Iterable, Iterator, List, Optional

import numpy as np

from .atomic import write_bytes_atomic, write_text_atomic
from .defaults import DEFAULT_MARGIN
from .finding import Detections, cut_out
from .finding.detections import cut_by, without_border_particles
from .inference import BatchResult, CancelToken, Classifier, FileResult, batched
from .contrast import mask_contrast, other_contrast_warning
from .input_decision import particle_image_warning, size_warning
from .io import FolderListing, ImageReadError, Sample, read_image
from .runtime import cpu_threads_beside

# Micrographs searched ahead of the one being classified. One left the search idle while a micrograph
# with many particles was classified, and the classifier idle after one with few; three smoothed that
# out (NanoShapes, 416 x 416: 10-14 % faster end to end with the classifier's threads below).
FIND_AHEAD = 3
FIND_AHEAD_MAX_PX = 2048 * 2048   # ... while the last one held at most this many pixels (4 Mpx); one beyond

BORDER_NOTE = ("particle is cut by the micrograph's edge (or that of its data): its size and class are less "
               "reliable")


def crop_context(card) -> int:
    """Pixels of surround around a found particle's box when it is cut out for this classifier.

    Models trained with masks record their images' median side and mask box (the input decision):
    half their difference is the surround they saw. Otherwise the default margin (50 px, the
    seed's particle images).
    """
    decision = (card.training or {}).get("input_decision") or {}
    side, box = decision.get("median_image_side"), decision.get("median_mask_box")
    if isinstance(side, int) and isinstance(box, int) and side > box > 0:
        return max(2, (side - box) // 2)
    return DEFAULT_MARGIN


@dataclass
class FoundMicrograph:
    """One micrograph decoded and searched (or the reason it could not be)."""

    sample: Sample
    error: Optional[ImageReadError] = None
    image: Optional[np.ndarray] = None
    sha256: str = ""
    pixel_size_nm: Optional[float] = None
    detections: Optional[Detections] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def notes(self) -> List[str]:
        """What the reader and the finder noted about the whole micrograph (the summary's
        per-micrograph ``notes``)."""
        return list(self.warnings) + (list(self.detections.notes) if self.detections is not None else [])

    @property
    def doubts(self) -> List[str]:
        """What puts all of this micrograph's particles in doubt (the finder's warnings), as each of
        its CSV rows carries it: prefixed by :data:`MICROGRAPH_WARNING`, so that a resumed record
        still has it (:func:`micrograph_warnings` reads it back)."""
        return [MICROGRAPH_WARNING + w for w in (self.detections.warnings if self.detections is not None else [])]


# The prefix of a warning that concerns the whole micrograph, in each of its particle rows.
MICROGRAPH_WARNING = "micrograph: "
# Posterior draws, and Gibbs sweeps per draw, behind each micrograph's adjusted-% interval
# (:func:`micrograph_table`; the folder's: 2,000 and emclassify.prevalence.SWEEPS).
MICROGRAPH_DRAWS = 500
MICROGRAPH_SWEEPS = 50


def micrograph_warnings(rows: Iterable[FileResult]) -> List[str]:
    """The micrograph-wide warnings (:attr:`FoundMicrograph.doubts`) in one micrograph's rows, once
    each, in order, without their prefix."""
    seen: Dict[str, None] = {}
    for r in rows:
        for w in r.warnings:
            if w.startswith(MICROGRAPH_WARNING):
                seen.setdefault(w[len(MICROGRAPH_WARNING):], None)
    return list(seen)


def fill_no_data(image: np.ndarray, max_samples: int = 1 << 20) -> Optional[np.ndarray]:
    """Set a float micrograph's NaN and infinite pixels (no data: outside a stitched montage's
    tiles) to the median of the others, in place, so the finders and the cut-out particles see a
    flat background there. Returns their bool mask (H x W), or None when every pixel holds a value.
    The median is taken from at most ``max_samples`` evenly strided pixels."""
    if image.dtype.kind != "f":
        return None
    missing = ~np.isfinite(image)
    if not missing.any():
        return None
    step = max(1, int(np.ceil(np.sqrt(image.size / max_samples))))
    sample = image[::step, ::step]
    held = sample[np.isfinite(sample)]
    image[missing] = np.median(held) if held.size else np.median(image[~missing])
    return missing


def find_in(sample: Sample, finder, pixel_size_nm: Optional[float] = None) -> FoundMicrograph:
    """Decode one micrograph and find its particles; errors are kept, never raised. Pixels that
    hold no value (NaN, infinite) are no data (:func:`fill_no_data`): particles next to them are
    cut by the edge of what was imaged, flagged (and dropped with ``exclude_border``) as at the
    micrograph's own edge."""
    try:
        loaded = read_image(sample.path, missing_ok=True)
    except ImageReadError as exc:
        return FoundMicrograph(sample, error=exc)
    missing = fill_no_data(loaded.array)
    pixel = pixel_size_nm if pixel_size_nm is not None else loaded.pixel_size_nm
    out = FoundMicrograph(sample, image=loaded.array, sha256=loaded.sha256, pixel_size_nm=pixel,
                          warnings=list(loaded.warnings))
    try:
        det = finder.find(loaded.array, pixel)
        if missing is not None:
            det = cut_by(det, missing)
            if getattr(finder, "exclude_border", False):
                det = without_border_particles(det, pixel)
        out.detections = det
    except Exception as exc:  # noqa: BLE001 - one micrograph's failure is its error row; the run goes on
        out.error = ImageReadError(sample.path, f"particle finding failed: {exc or type(exc).__name__}")
    return out


def micrograph_rows(found: FoundMicrograph, classifier: Classifier, context: int, batch_size: int,
                    sides: Optional[Dict]) -> List[FileResult]:
    """The CSV rows of one searched micrograph (steps 3-4 of the module doc): one per particle, or
    one ``error`` / ``none_found`` row. sides: the model's training image sides (size warnings, and the
    doubt on a "micrograph" the size of those particle images)."""
    rel = found.sample.relpath
    if found.error is not None:
        return [FileResult(path=rel, sha256=found.sha256, status="error", error=found.error.reason,
                           warnings=list(found.warnings))]
    det = found.detections
    doubts = found.doubts
    small = particle_image_warning(found.image.shape[0], found.image.shape[1], sides) if sides else ""
    if small:
        doubts.append(MICROGRAPH_WARNING + small)
    if not det.particles:
        return [FileResult(path=rel, sha256=found.sha256, status="none_found",
                           height=found.image.shape[0], width=found.image.shape[1],
                           warnings=found.notes + doubts + ["no particles found"])]
    cfg = classifier.config
    polarity = classifier.particle_polarity
    rows: List[FileResult] = []
    todo = []
    for p in det.particles:
        crop, mask, (x0, y0, x1, y1) = cut_out(found.image, det.labels, p, context)
        r = FileResult(path=rel, sha256=found.sha256, height=crop.shape[0], width=crop.shape[1],
                       size=p.size, particle=p, warnings=list(doubts))
        if p.touches_border:
            r.warnings.append(BORDER_NOTE)
        # measured against the background around it, not its neighbours
        contrast = (other_contrast_warning(mask_contrast(crop, mask, (det.labels[y0:y1, x0:x1] > 0) & ~mask), polarity)
                    if polarity else "")
        if contrast:
            r.warnings.append(contrast)
        problem = cfg.region_problem(crop.shape[0], crop.shape[1], mask)
        if problem is not None:
            r.status, r.error = "error", problem
        else:
            if sides:
                note = size_warning(crop.shape[0], crop.shape[1], sides)
                if note:
                    r.warnings.append(note)
            todo.append((r, crop, mask))
        rows.append(r)
    for chunk in batched(todo, batch_size):
        try:
            probs = classifier.predict_proba([c for _, c, _ in chunk], [m for _, _, m in chunk])
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: rows, not a crash
            for r, _, _ in chunk:
                r.status, r.error = "error", f"classification failed: {exc}"
            continue
        for (r, _, _), pr in zip(chunk, probs):
            k = int(np.argmax(pr))
            r.probabilities = [float(v) for v in pr]
            r.predicted_class = classifier.classes[k]
            r.confidence = float(pr[k])
    return rows


def classify_micrographs(
    listing: FolderListing,
    classifier: Classifier,
    finder,
    batch_size: int = 64,
    skip: Collection[str] = (),
    cancel: Optional[CancelToken] = None,
    pixel_size_nm: Optional[float] = None,
    on_found=None,
) -> Iterator[BatchResult]:
    """Classify the particles of every micrograph in ``listing``; one :class:`BatchResult` per micrograph.

    skip: relative paths not to process (``--resume``). on_found(FoundMicrograph, rows): called
    after each micrograph (crop and label export). Stops after the micrograph in progress when
    ``cancel`` is cancelled.
    """
    todo = [s for s in listing.samples if s.relpath not in skip]
    total = len(todo)
    context = crop_context(classifier.card)
    batch_size = classifier.images_per_batch(batch_size)
    sides = classifier.training_image_sides
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="emclassify-find") as pool:
        searches = deque([pool.submit(find_in, todo[0], finder, pixel_size_nm)] if todo else [])
        submitted = len(searches)
        for i in range(total):
            if cancel is not None and cancel.cancelled:
                for search in searches:
                    search.cancel()
                return
            found = searches.popleft().result()
            small = found.image is None or found.image.size <= FIND_AHEAD_MAX_PX
            while submitted < total and len(searches) < (FIND_AHEAD if small else 1):
                searches.append(pool.submit(find_in, todo[submitted], finder, pixel_size_nm))
                submitted += 1
            with cpu_threads_beside(1 if searches else 0):
                rows = micrograph_rows(found, classifier, context, batch_size, sides)
            if on_found is not None:
                on_found(found, rows)
            elapsed = time.perf_counter() - start
            rate = (i + 1) / elapsed if elapsed > 0 else 0.0
            eta = (total - i - 1) / rate if rate > 0 else None
            yield BatchResult(rows, i + 1, total, elapsed, rate, eta, listing)


class ParticleLookup:
    """The particles of a micrograph run, cut back out for viewing and review (GUI).

    The CSV keeps each particle's box, not its mask; the run's finder is deterministic, so finding
    again in the same micrograph gives the same labels (checked: the particle count must equal the
    run's, else :class:`ValueError`). The last ``keep`` micrographs stay in memory.
    """

    def __init__(self, root, finder, context: int = DEFAULT_MARGIN, keep: int = 2):
        self.root, self.finder, self.context, self.keep = Path(root), finder, context, keep
        self._cache: Dict[str, tuple] = {}

    @classmethod
    def for_run(cls, run) -> "ParticleLookup":
        """For a :class:`emclassify.batch.BatchRun` (classified here or reopened from its CSV)."""
        from .finding import finder_from_record

        finder = run.finder if run.finder is not None else finder_from_record(run.finding)
        return cls(run.root, finder, crop_context(run.trained.card))

    def has(self, relpath: str) -> bool:
        """Whether ``relpath``'s particles are in memory (so :meth:`particle` returns at once)."""
        return relpath in self._cache

    def micrograph(self, relpath: str) -> tuple:
        """(image, Detections) of one micrograph of the run."""
        if relpath not in self._cache:
            found = find_in(Sample(path=self.root / relpath, relpath=relpath), self.finder)
            if found.error is not None:
                raise ValueError(f"{relpath}: {found.error.reason}")
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            self._cache[relpath] = (found.image, found.detections)
        return self._cache[relpath]

    def particle(self, result: FileResult) -> tuple:
        """(image crop, bool mask) of a particle row, as the classifier saw it."""
        image, det = self.micrograph(result.path)
        p = result.particle
        if p is None or not 1 <= p.index <= len(det.particles) or det.particles[p.index - 1].box != p.box:
            raise ValueError(f"{result.path}: particle {p.index if p else '?'} is not where the run found it "
                             "(the micrograph or the finder changed since the run)")
        crop, mask, _ = cut_out(image, det.labels, det.particles[p.index - 1], self.context)
        return crop, mask


# ---- what a micrograph run writes besides the CSV ----------------------------------------------

class CropWriter:
    """``--save-crops DIR``: every classified particle as ``images/<class>/<name>.tif`` plus
    ``masks/<class>/<name>.tif`` and ``manifest.csv`` (``path,mask,label,group``, the micrograph
    as ``group``): the layout ``emclassify train`` and the Review view read. ``label`` is the
    predicted class, to be corrected in review before training on it."""

    def __init__(self, root):
        self.root = Path(root)
        self.rows: List[tuple] = []
        self.root.mkdir(parents=True, exist_ok=True)

    def add(self, found: FoundMicrograph, rows: List[FileResult], context: int) -> None:
        """The classified particles of one micrograph, labelled with their predicted class."""
        if found.detections is None:
            return
        self.add_labelled(found.sample.relpath, found.image, found.detections,
                          [(r.particle, r.predicted_class) for r in rows if r.ok and r.particle is not None], context)

    def add_labelled(self, relpath: str, image: np.ndarray, detections: Detections,
                     labelled: List[tuple], context: int) -> None:
        """(particle, label) pairs of one micrograph (``relpath``, its path in the run's folder),
        cut out with ``context`` px of surround as :func:`micrograph_rows` cuts them."""
        import tifffile

        stem = Path(relpath).with_suffix("").as_posix().replace("/", "__")
        group = Path(relpath).with_suffix("").as_posix()
        for particle, label in labelled:
            crop, mask, _ = cut_out(image, detections.labels, particle, context)
            name = f"{stem}_p{particle.index:04d}.tif"
            img_rel, mask_rel = f"images/{label}/{name}", f"masks/{label}/{name}"
            for rel, arr in ((img_rel, crop), (mask_rel, mask.astype(np.uint8) * 255)):
                buf = io.BytesIO()
                tifffile.imwrite(buf, arr, photometric="minisblack")
                (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(self.root / rel, buf.getvalue(), durable=False)
            self.rows.append((img_rel, mask_rel, label, group))

    def close(self) -> Path:
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(["path", "mask", "label", "group"])
        w.writerows(sorted(self.rows))
        return write_text_atomic(self.root / "manifest.csv", text.getvalue())


def write_label_image(root, found: FoundMicrograph) -> Optional[Path]:
    """``--save-labels DIR``: the micrograph's instance labels as ``<name>.labels.tif`` (uint16, or
    uint32 past 65,535 particles; 0 background, k the ``particle`` k of the CSV)."""
    import tifffile

    if found.detections is None:
        return None
    labels = found.detections.labels
    dtype = np.uint16 if int(labels.max(initial=0)) < 2**16 else np.uint32
    rel = Path(found.sample.relpath).with_suffix("")
    out = Path(root) / f"{rel.as_posix()}.labels.tif"
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    tifffile.imwrite(buf, labels.astype(dtype), photometric="minisblack", compression="zlib")
    return write_bytes_atomic(out, buf.getvalue())


def micrograph_table(results: List[FileResult], classes: List[str], notes: Optional[Dict[str, List[str]]] = None,
                     confusion=None) -> List[Dict]:
    """Per micrograph: particles found, classified, in error, counts and % per class, the adjusted %
    with 95 % intervals (``confusion``: the model's held-out confusion matrix,
    :func:`emclassify.prevalence.adjusted_prevalence`; omitted without one), diameter median and
    quartiles per class (:func:`size_summary`), pixel size, the warnings its rows carry
    (:func:`micrograph_warnings`) and the notes of the reader and finder (``notes``: by path, for the
    micrographs of this session).

    A micrograph holds tens to hundreds of particles, so its intervals are wide: that is what one
    micrograph can say, and why the whole folder's figures are the ones to report. They come from
    :data:`MICROGRAPH_DRAWS` posterior draws of :data:`MICROGRAPH_SWEEPS` sweeps each: ~20 ms per
    micrograph instead of ~0.1 s with the folder's settings, since the summary is built in the GUI's
    thread when a run ends.
    """
    from .prevalence import adjusted_prevalence

    by: Dict[str, List[FileResult]] = {}
    for r in results:
        by.setdefault(r.path, []).append(r)
    table = []
    for path in sorted(by):
        rows = by[path]
        ok = [r for r in rows if r.ok]
        counts = {c: sum(r.predicted_class == c for r in ok) for c in classes}
        sizes = [r.size for r in rows if r.size is not None]
        entry = {
            "micrograph": path,
            "status": ("error" if any(r.failed and r.particle is None for r in rows) else
                       "none_found" if any(r.status == "none_found" for r in rows) else "ok"),
            "particles": sum(r.particle is not None for r in rows),
            "classified": len(ok),
            "errors": sum(r.failed for r in rows),
            "counts": counts,
            "percentages": {c: (100.0 * counts[c] / len(ok) if ok else 0.0) for c in classes},
        }
        if confusion is not None:
            adjusted = adjusted_prevalence([counts[c] for c in classes], confusion, classes,
                                           n_boot=MICROGRAPH_DRAWS, sweeps=MICROGRAPH_SWEEPS)["classes"]
            entry["adjusted"] = {c: {"percent": a["percent"], "ci95": a["ci95"]} for c, a in adjusted.items()}
        measured = size_summary(rows, classes)
        entry.update({
            "sizes": {k: v for k, v in measured.items() if k != "unit_note"},
            "pixel_size_nm": sizes[0].pixel_size_nm if sizes else None,
            "warnings": micrograph_warnings(rows),
            **({"notes": notes[path]} if notes and path in notes else {}),
        })
        table.append(entry)
    return table


def size_summary(results: List[FileResult], classes: List[str]) -> Dict:
    """Diameter (equivalent circle) per predicted class: n, median, quartiles, in px and, when every
    measured particle has a pixel size, in nm."""
    from .finding import sizes_by_class

    ok = [r for r in results if r.ok and r.size is not None]
    names = [r.predicted_class for r in ok]
    out = {"unit_note": "equivalent-circle diameter of each particle's mask",
           "diameter_px": sizes_by_class([r.size.diameter_px for r in ok], names, classes)}
    if ok and all(r.size.pixel_size_nm is not None for r in ok):
        out["diameter_nm"] = sizes_by_class([r.size.diameter_nm for r in ok], names, classes)
    return out


def size_histogram_png(results: List[FileResult], classes: List[str]) -> Optional[bytes]:
    """PNG bytes of the diameter histogram per predicted class (nm when known for all, else px)."""
    ok = [r for r in results if r.ok and r.size is not None]
    if not ok:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    in_nm = all(r.size.pixel_size_nm is not None for r in ok)
    values = {c: [r.size.diameter_nm if in_nm else r.size.diameter_px for r in ok if r.predicted_class == c]
              for c in classes}
    allv = np.concatenate([np.asarray(v, float) for v in values.values() if v])
    bins = np.histogram_bin_edges(allv, bins=min(40, max(5, int(np.sqrt(len(allv))))))
    fig = Figure(figsize=(6.4, 3.6), dpi=110)
    ax = fig.add_subplot(111)
    for c in classes:
        if values[c]:
            ax.hist(values[c], bins=bins, alpha=0.6, label=f"{c} (n={len(values[c])})")
    ax.set_xlabel("diameter (nm)" if in_nm else "diameter (px; pixel size unknown)")
    ax.set_ylabel("particles")
    ax.legend(frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
