"""How well a finder finds the particles of outlined micrographs: ``emclassify find-eval``.

Input layout (that of NanoShapes micrographs and of ``emclassify synth --micrographs``):
``FOLDER/images/<name>.<ext>`` and ``FOLDER/instances/<name>.tif`` (0 background, k > 0 the
pixels of particle k). Per micrograph and over all: found, true and matched particles at IoU >=
0.5, precision, recall, F1, the mean IoU of matched particles and the count error
(:mod:`.matching`). A micrograph whose instance image is missing or of another size is reported
as an error and left out of the figures; the run goes on.

**End to end** (``classifier`` given, and ``FOLDER/particles.csv`` naming each outlined particle's
class): the found particles are cut out and classified as ``batch --micrographs`` does, and per
class c, a found particle predicted c that matches an outlined c particle is a true positive; one
predicted c that matches nothing or another class is a false positive; an outlined c particle
not found, or found and called otherwise, is a false negative. The end-to-end macro-F1 therefore
counts finding and classifying errors together; the classification-only macro-F1 over matched
particles is reported beside it, and so is the classifier alone on the outlined particles cut out as
if found (``on_outlines``: what a perfect finder would leave; the end-to-end figure's gap to it is what
finding costs). The classifier must not have been trained on these micrographs;
a warning says so when its card lists some of them among its training micrographs
(:func:`classifier_saw`). With ``--folds --train-classifier`` a classifier is trained per fold on
the particles that fold's finder finds in its training micrographs (:func:`classifier_on_found`).

**Cross-validation** (:func:`cross_validate_finders`): whole micrographs are held out in k folds;
the learned finder is trained on the others with the settings given (by default on all of them;
with ``val_fraction`` > 0 its seed threshold is chosen on an inner held-out part) and scored on
them beside the classical finder, on the same micrographs.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..io import IMAGE_EXTENSIONS, ImageReadError, read_image
from .matching import MISSED_WORDS, SPURIOUS_WORDS, InstanceMatch, match_instances, summarise


class EvaluationError(Exception):
    """The folder cannot be evaluated; the message says why."""


def outlined_micrographs(folder) -> List[tuple]:
    """(image path, instance source) pairs of a folder: ``images/`` with either ``instances/`` (the
    source is the label TIFF's path) or a COCO file of polygons (:mod:`.coco`; the source is its
    :class:`~.coco.CocoImage`, or None for a micrograph the file does not list). Read a source with
    :func:`read_instances`."""
    from .coco import CocoError, find_coco, read_coco

    folder = Path(folder)
    images, instances = folder / "images", folder / "instances"
    if not images.is_dir():
        raise EvaluationError(f"{folder}: expected an images/ folder of micrographs, with instances/ (instance label "
                              "images of the same names) or a COCO file of outlined particles")
    files = [p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    if not files:
        raise EvaluationError(f"{images}: no micrographs found")
    if instances.is_dir():
        return [(p, instances / f"{p.stem}.tif") for p in files]
    coco_path = find_coco(folder)
    if coco_path is None:
        raise EvaluationError(f"{folder}: neither instances/ (instance label images) nor a COCO file "
                              "(annotations.coco.json) of outlined particles")
    try:
        table = read_coco(coco_path)
    except CocoError as exc:
        raise EvaluationError(str(exc)) from None
    by_name = {Path(k).name: v for k, v in table.items()}
    return [(p, table.get(p.relative_to(folder).as_posix()) or by_name.get(p.name)) for p in files]


def read_instances(source, shape) -> np.ndarray:
    """int64 instance labels of one micrograph of ``shape`` from an :func:`outlined_micrographs`
    source; ValueError saying why they cannot be used."""
    from .coco import CocoImage

    if source is None:
        raise ValueError("the COCO file does not list this micrograph")
    if isinstance(source, CocoImage):
        if (source.height, source.width) != tuple(shape):
            raise ValueError(f"the COCO file gives it {source.width}x{source.height} px, the micrograph is "
                             f"{shape[1]}x{shape[0]} px")
        if source.problems:
            raise ValueError(f"the COCO file's outlines of it cannot be used: {source.problems[0]}")
        return source.labels().astype(np.int64)
    try:
        truth = read_image(source, checksum=False, with_pixel_size=False).array
    except ImageReadError as exc:
        raise ValueError(str(exc)) from None
    if truth.shape != tuple(shape):
        raise ValueError(f"instance image is {truth.shape[1]}x{truth.shape[0]} px, the micrograph "
                         f"{shape[1]}x{shape[0]} px")
    return truth


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


def truth_classes(folder, pairs: Optional[List[tuple]] = None) -> Dict[Tuple[str, int], str]:
    """(micrograph path relative to the folder, particle number) -> class, from ``particles.csv``
    (``micrograph,particle,label,...``), else from the COCO categories when the outlines are COCO;
    empty when neither can be read. pairs: :func:`outlined_micrographs` of the folder when already
    listed (its COCO file is then not parsed again)."""
    path = Path(folder) / "particles.csv"
    if not path.is_file() and not (Path(folder) / "instances").is_dir():
        try:
            return {(p.relative_to(folder).as_posix(), k): c for p, src in (pairs or outlined_micrographs(folder))
                    if src is not None and not isinstance(src, Path) for k, c in src.classes().items()}
        except EvaluationError:
            return {}
    out: Dict[Tuple[str, int], str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    out[(str(row["micrograph"]), int(row["particle"]))] = str(row["label"])
                except (KeyError, TypeError, ValueError):
                    continue
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return out


def classify_found(image: np.ndarray, detections, classifier, batch_size: int = 64) -> Dict[int, str]:
    """Found particle index -> predicted class, cut out and classified as ``batch --micrographs`` does."""
    from ..io import Sample
    from ..micrographs import FoundMicrograph, crop_context, micrograph_rows

    found = FoundMicrograph(Sample(path=Path("micrograph"), relpath="micrograph"), image=image, detections=detections)
    rows = micrograph_rows(found, classifier, crop_context(classifier.card), classifier.images_per_batch(batch_size),
                           None)
    return {r.particle.index: r.predicted_class for r in rows if r.particle is not None and r.predicted_class}


def end_to_end_scores(records: Sequence[Tuple[InstanceMatch, Dict[int, str], Dict[int, str]]],
                      classes: Sequence[str], on_outlines: Optional[Sequence[tuple]] = None) -> Dict:
    """Per-class and macro F1 of finding + classifying (module doc).

    records: per micrograph (match, found index -> predicted class, true index -> true class).
    Found particles without a prediction (region too small) count as predicted "none".
    on_outlines: the same records with the outlined particles themselves as the found ones
    (:func:`outlined_as_found`); their scores are ``on_outlines``, the classifier's share of the
    error. A classifier trained on a finder's particles learnt that finder's outlines, not these,
    so for it this is a rough bound, not an exact one.
    ``unoutlined``: how many found particles lie where nothing is outlined (:mod:`.matching`'s
    kind), and the macro-F1 without them. Outlines are often incomplete (on NanoShapes about half of
    such particles were whole particles nobody outlined): a diagnostic for reading the score, not a
    score.
    """
    scores = _end_to_end(records, classes)
    kept = [(m, {f: c for f, c in predicted.items() if m.spurious_kinds.get(f) != "unoutlined"}, truth)
            for m, predicted, truth in records]
    left_out = sum(len(r[1]) - len(k[1]) for r, k in zip(records, kept))
    scores["unoutlined"] = {"found": left_out, "macro_f1_without": _end_to_end(kept, classes)["macro_f1"]}
    if on_outlines is not None:
        o = _end_to_end(on_outlines, classes)
        scores["on_outlines"] = {k: o[k] for k in ("macro_f1", "per_class_f1", "matched_particles", "matched_accuracy")}
    return scores


def outlined_as_found(truth: np.ndarray) -> tuple:
    """(detections, match): the outlined particles of ``truth`` (instance labels) as if a finder had
    found them with these outlines, and their (perfect) match to ``truth``; for
    :func:`end_to_end_scores`' ``on_outlines``."""
    from .detections import measure

    outlined = measure(truth)
    return outlined, match_instances(outlined.labels, truth)


def _end_to_end(records, classes) -> Dict:
    tp = {c: 0 for c in classes}
    fp = {c: 0 for c in classes}
    fn = {c: 0 for c in classes}
    matched_right = matched = 0
    per_class_matched = {c: [0, 0, 0] for c in classes}  # tp, fp, fn among matched particles only
    for match, predicted, truth in records:
        paired_found = {f: t for f, t, _ in match.pairs}
        found_of_true = {t: f for f, t in paired_found.items()}
        for f, p in predicted.items():
            t = paired_found.get(f)
            if p in tp and t is not None and truth.get(t) == p:
                tp[p] += 1
            elif p in fp:
                fp[p] += 1
        for t, c in truth.items():
            if c not in fn:
                continue
            f = found_of_true.get(t)
            if f is None or predicted.get(f) != c:
                fn[c] += 1
        for f, t in paired_found.items():
            c, p = truth.get(t), predicted.get(f)
            if c is None:
                continue
            matched += 1
            matched_right += int(p == c)
            if c in per_class_matched:
                per_class_matched[c][0 if p == c else 2] += 1
            if p != c and p in per_class_matched:
                per_class_matched[p][1] += 1

    def f1(a, b, c):
        return 2 * a / (2 * a + b + c) if a + b + c else 0.0

    per_class = {c: round(f1(tp[c], fp[c], fn[c]), 4) for c in classes}
    matched_f1 = {c: round(f1(*per_class_matched[c]), 4) for c in classes}
    return {"classes": list(classes), "per_class_f1": per_class, "macro_f1": round(float(np.mean(list(per_class.values()))), 4),
            "matched_particles": matched,
            "matched_accuracy": round(matched_right / matched, 4) if matched else None,
            "matched_per_class_f1": matched_f1,
            "matched_macro_f1": round(float(np.mean(list(matched_f1.values()))), 4)}


def on_outlines_text(e: Dict) -> str:
    """A sentence on the classifier alone on the outlined particles (:func:`end_to_end_scores`), or ""."""
    o = e.get("on_outlines")
    if not o:
        return ""
    acc = "" if o["matched_accuracy"] is None else f", {100 * o['matched_accuracy']:.1f} % right"
    return (f" On the outlined particles themselves, cut out as if found (a perfect finder), the classifier "
            f"scores macro-F1 {o['macro_f1']:.3f}{acc}: the gap from there to the end-to-end figure is what "
            f"finding costs, the rest the classifier's.")


def unoutlined_text(e: Dict) -> str:
    """A sentence on the found particles where nothing is outlined (:func:`end_to_end_scores`), or ""."""
    u = e.get("unoutlined") or {}
    if not u.get("found"):
        return ""
    return (f" {u['found']} found particle(s) lie where nothing is outlined (debris, or particles nobody outlined: "
            f"look at the overlays); without them the end-to-end macro-F1 would be {u['macro_f1_without']:.3f}.")


def _read_pair(folder: Path, image_path: Path, source):
    """(relative name, image, truth labels) or (relative name, error message)."""
    rel = image_path.relative_to(folder).as_posix()
    try:
        image = read_image(image_path, with_pixel_size=False).array
    except ImageReadError as exc:
        return rel, str(exc)
    try:
        truth = read_instances(source, image.shape)
    except ValueError as exc:
        return rel, str(exc)
    return rel, image, truth.astype(np.int64)


def matched_classes(match: InstanceMatch, detections, truth: Dict[int, str]) -> List[tuple]:
    """(found particle, class) for each found particle that matches an outlined particle of a
    known class (IoU >= 0.5), labelled with that class; the others are left out."""
    by_index = {p.index: p for p in detections.particles}
    return [(by_index[f], truth[t]) for f, t, _ in match.pairs if f in by_index and t in truth]


def _classes_of(classifier, truths) -> List[str]:
    """The classifier's classes, or the outlined particles' classes when there is no classifier."""
    return list(classifier.classes) if classifier is not None else sorted(set((truths or {}).values()))


def _evaluate_pairs(folder: Path, pairs, finder, overlays=None, classifiers: Optional[Dict[str, object]] = None,
                    truths=None, progress: Optional[Callable[[int, int], None]] = None,
                    on_outlines: Optional[Dict] = None) -> Dict:
    """Scores of ``finder`` on ``pairs``; classifiers: name -> Classifier for end-to-end scores.
    on_outlines: a dict kept across finders scored on the same micrographs with the same classifiers
    (cross-validation), so that the outlined particles, which do not depend on the finder, are
    classified once; (classifier name, micrograph) -> its ``on_outlines`` record."""
    from ..atomic import write_bytes_atomic

    classifiers = classifiers or {}
    per, matches, errors = [], [], []
    records: Dict[str, list] = {name: [] for name in classifiers}
    outline_records: Dict[str, list] = {name: [] for name in classifiers}
    on_outlines = {} if on_outlines is None else on_outlines
    start = time.perf_counter()
    pixels = 0
    for i, (image_path, instance_path) in enumerate(pairs, 1):
        got = _read_pair(folder, image_path, instance_path)
        if len(got) == 2:
            errors.append({"micrograph": got[0], "error": got[1]})
            continue
        rel, image, truth = got
        det = finder.find(image)
        m: InstanceMatch = match_instances(det.labels, truth)
        matches.append(m)
        pixels += image.size
        row = {"micrograph": rel, **{k: v for k, v in summarise([m]).items() if k != "micrographs"},
               "notes": det.notes, "warnings": det.warnings}
        true_cls = {k: c for (name, k), c in (truths or {}).items() if name == rel}
        if classifiers and not all((name, rel) in on_outlines for name in classifiers):
            outlined, perfect = outlined_as_found(truth)
            for name, classifier in classifiers.items():
                on_outlines[(name, rel)] = (perfect, classify_found(image, outlined, classifier)
                                            if classifier is not None else {}, true_cls)
        for name, classifier in classifiers.items():
            # None: no classifier could be trained, so nothing found is classified (all count as missed)
            predicted = classify_found(image, det, classifier) if classifier is not None else {}
            records[name].append((m, predicted, true_cls))
            outline_records[name].append(on_outlines[(name, rel)])
            classes = _classes_of(classifier, truths)
            counts = {"found_by_class": {c: sum(1 for p in predicted.values() if p == c) for c in classes},
                      "true_by_class": {c: sum(1 for t in true_cls.values() if t == c) for c in classes}}
            if len(classifiers) == 1:
                row.update(counts)
            else:
                row.setdefault("by_classifier", {})[name] = counts
        per.append(row)
        if overlays is not None:
            write_bytes_atomic(Path(overlays) / f"{image_path.stem}.png", overlay_png(image, det.labels, truth))
        if progress:
            progress(i, len(pairs))
    elapsed = time.perf_counter() - start
    out = {"finder": finder.params(), "overall": summarise(matches), "per_micrograph": per, "errors": errors,
           "seconds": round(elapsed, 2), "megapixels_per_s": round(pixels / 1e6 / elapsed, 3) if elapsed else None,
           "_matches": matches, "_records": records, "_outline_records": outline_records}
    if classifiers:
        out["end_to_end_by_classifier"] = {name: end_to_end_scores(recs, _classes_of(classifiers[name], truths),
                                                                   outline_records[name])
                                           for name, recs in records.items()}
        out["end_to_end"] = next(iter(out["end_to_end_by_classifier"].values()))
    return out


def outlined_classes(d, truths: Dict[Tuple[str, int], str]) -> Dict[int, str]:
    """The outlined particles' classes of one :class:`~.training.OutlinedMicrograph`, by their number
    in ``d.labels`` (renumbered 1..n on loading); truths: (micrograph name, original id) -> class."""
    keys = {k: (d.name, int(orig)) for k, orig in enumerate(d.label_ids) if k}
    return {k: truths[key] for k, key in keys.items() if key in truths}


def write_found_training_crops(data, finder, truths: Dict[Tuple[str, int], str], out, context: int) -> Dict:
    """A particle-image dataset (``images/<class>/``, ``masks/<class>/``, ``manifest.csv`` with the
    micrograph as ``group``: the layout ``emclassify train`` reads) of the particles ``finder``
    finds in outlined micrographs, each labelled with the class of the outlined particle it
    matches; found particles that match none are left out, and so are those whose box is under
    the classifier's minimum region side (``batch`` gives them error rows; ``train`` would refuse
    them). A classifier trained on it sees particles as ``batch --micrographs`` cuts them
    (``context`` px of surround, the finder's masks).

    data: :class:`~.training.OutlinedMicrograph` list (names as keys of ``truths``).
    Returns {"particles": written, "found": found, "outlined": outlined with a class,
    "too_small": matched but left out for their size}.
    """
    from ..micrographs import CropWriter
    from ..preprocess import MIN_REGION_SIDE

    writer = CropWriter(out)
    written = found = outlined = too_small = 0
    for d in data:
        det = finder.find(d.raw)
        truth = outlined_classes(d, truths)
        matched = matched_classes(match_instances(det.labels, d.labels), det, truth)
        labelled = [(p, c) for p, c in matched if min(p.width, p.height) >= MIN_REGION_SIDE]
        writer.add_labelled(d.name, d.raw, det, labelled, context)
        written, found, outlined = written + len(labelled), found + len(det.particles), outlined + len(truth)
        too_small += len(matched) - len(labelled)
    writer.close()
    return {"particles": written, "found": found, "outlined": outlined, "too_small": too_small}


def classifier_saw(classifier, micrographs: Sequence[str]) -> Optional[str]:
    """A warning when ``classifier`` was trained on particles of some of ``micrographs`` (paths
    relative to the evaluated folder), judged by the micrograph names (groups) its card lists;
    a note when the card lists none, so that this cannot be checked; None when it saw none."""
    data = classifier.card.data or {}
    groups = data.get("group_names")
    if not isinstance(groups, list) or not groups:
        return ("the classifier's card does not list the micrographs it was trained on, so it cannot be checked "
                "that it never saw these: end-to-end scores are honest only for a classifier trained elsewhere")
    known = {Path(str(g)).name for g in groups}
    seen = [m for m in micrographs if Path(m).stem in known]
    total = data.get("groups")  # the card caps the names it lists (training.train.MAX_GROUP_NAMES)
    if not seen:
        if isinstance(total, int) and total > len(groups):
            return (f"the classifier's card lists only {len(groups)} of its {total} training micrographs, none "
                    "of them scored here: the others cannot be checked")
        return None
    return (f"the classifier was trained on particles of {len(seen)} of the {len(micrographs)} scored micrographs "
            f"(e.g. {seen[0]}): its end-to-end scores there are optimistic")


def evaluate_finder(folder, finder, overlays=None, progress: Optional[Callable[[int, int], None]] = None,
                    classifier=None) -> Dict:
    """Run ``finder`` on every outlined micrograph under ``folder``; return the metrics dict.

    overlays: a folder for one ``<name>.png`` per micrograph (found red, outlined green).
    classifier: an :class:`emclassify.inference.Classifier` for the end-to-end scores (module doc).
    """
    folder = Path(folder)
    pairs = outlined_micrographs(folder)
    truths = _classifier_truths(folder, classifier, pairs)
    out = _evaluate_pairs(folder, pairs, finder, overlays, {"classifier": classifier} if classifier else None,
                          truths, progress)
    out.pop("_records")
    out.pop("_outline_records")
    out.pop("_matches")
    out.pop("end_to_end_by_classifier", None)
    warnings = []
    if classifier is not None:
        seen = classifier_saw(classifier, [p[0].relative_to(folder).as_posix() for p in pairs])
        warnings += [seen] if seen else []
    return {"folder": str(folder), "iou_threshold": 0.5, "warnings": warnings, **out}


def _classifier_truths(folder: Path, classifier, pairs):
    if classifier is None:
        return None
    truths = truth_classes(folder, pairs)
    if not truths:
        raise EvaluationError(f"{folder}/particles.csv (micrograph,particle,label) is needed to score classes "
                              "end to end; it is missing or unreadable")
    unknown = sorted(set(truths.values()) - set(classifier.classes))
    if unknown:
        raise EvaluationError(f"the outlined particles have classes the classifier does not know: {', '.join(unknown[:5])}")
    return truths


def micrograph_folds(n: int, folds: int, seed: int = 0) -> List[List[int]]:
    """``folds`` disjoint lists of micrograph indices (shuffled by ``seed``, sizes differing by <= 1)."""
    if not 2 <= folds <= n:
        raise EvaluationError(f"{folds} folds need at least {folds} micrographs (and at least 2 folds); there are {n}")
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in order[k::folds]) for k in range(folds)]


FOUND_CLASSIFIER = "trained on found particles"


def found_crop_context(median_diameter_px: float) -> int:
    """Pixels of surround around a found particle cut out to train a classifier: a share of the
    particles' median diameter (:data:`~emclassify.defaults.FOUND_CROP_CONTEXT_SHARE`), at least 2."""
    from ..defaults import FOUND_CROP_CONTEXT_SHARE

    return max(2, int(round(FOUND_CROP_CONTEXT_SHARE * median_diameter_px)))


def classifier_on_found(data, finder, truths: Dict[Tuple[str, int], str], workdir: Path, context: int,
                        cancel=None, progress=None):
    """A classifier trained with ``emclassify train``'s defaults on the particles ``finder`` finds
    in the outlined micrographs ``data`` (:func:`write_found_training_crops`); (Classifier, counts).
    progress: receives ``train``'s events (:class:`~emclassify.events.EpochEnded` per epoch)."""
    from ..inference import Classifier
    from ..input_decision import decide_preprocess
    from ..io import load_dataset
    from ..training import TrainConfig, train

    counts = write_found_training_crops(data, finder, truths, workdir / "crops", context)
    if not counts["particles"]:
        raise ValueError(f"the finder found {counts['found']} particles there, none matching an outlined one "
                         "large enough to classify")
    ds = load_dataset(workdir / "crops")
    pcfg, decision = decide_preprocess(ds.samples)
    out = workdir / "classifier.safetensors"
    train(ds, pcfg, TrainConfig(), out, input_decision=decision, cancel=cancel, progress=progress)
    return Classifier.from_file(out, device="cpu"), counts


def learned_key(views: int) -> str:
    """The results key of the learned finder run with ``views`` (``learned``, ``learned_8_views``)."""
    return "learned" if views == 1 else f"learned_{views}_views"


def cross_validate_finders(folder, folds: int = 5, settings=None, classical=None, classifier_for=None,
                           train_classifier: bool = False, progress=None, cancel=None, overlays=None,
                           seed: int = 0, learned_views: Sequence[int] = (1,)) -> Dict:
    """k-fold, micrograph-wise evaluation of the learned finder beside the classical one (module doc).

    settings: :class:`~emclassify.finding.training.FinderTrainSettings`. classical: the classical
    finder to compare (default settings when None). classifier_for(training micrograph names) ->
    a Classifier, a dict name -> Classifier, or None: classifiers per fold for the end-to-end
    scores (they must not have seen the held-out micrographs). train_classifier: per fold, also
    train a classifier (``train``'s defaults) on the particles the fold's learned finder finds in
    its training micrographs, labelled by the outlined particles they match: it sees particles as
    ``batch --micrographs`` cuts them. Its scores come first (``end_to_end``); every classifier's
    are in ``end_to_end_by_classifier``. learned_views: the fold's learned network is scored once per
    entry (1: as is; 8: maps averaged over the 8 rotations and reflections), side by side; the
    classifier on found particles is trained with the first. Returns {"learned": ...,
    "learned_8_views": ... (when asked), "classical": ..., "finders": [those keys], "per_fold": [...]}.
    """
    import tempfile
    from dataclasses import replace

    from ..events import EpochEnded, FinderFoldEnded, emit
    from ..io import DatasetError
    from .classical import ClassicalFinder
    from .learned import LearnedFinder
    from .training import FinderTrainSettings, fit_finder, load_outlined, split_validation

    folder = Path(folder)
    settings = settings or FinderTrainSettings()
    classical = classical or ClassicalFinder()
    pairs = outlined_micrographs(folder)
    data, errors = load_outlined(pairs, folder)
    by_name = {d.name: d for d in data}
    usable = [p for p in pairs if p[0].relative_to(folder).as_posix() in by_name]
    scored = classifier_for is not None or train_classifier
    truths = truth_classes(folder, pairs) if scored else None
    if train_classifier and not truths:
        raise EvaluationError(f"{folder}: particles.csv (micrograph,particle,label) or COCO categories are needed "
                              "to train a classifier on the found particles")
    parts = micrograph_folds(len(usable), folds, seed)
    learned_views = list(dict.fromkeys(learned_views)) or [1]
    names = [learned_key(v) for v in learned_views] + ["classical"]
    results: Dict[str, list] = {name: [] for name in names}
    fold_rows = []
    start = time.perf_counter()
    for k, test_idx in enumerate(parts):
        if cancel is not None and cancel.cancelled:
            break
        train = [data[i] for i in range(len(usable)) if i not in set(test_idx)]
        inner_train, inner_val = split_validation(len(train), settings.val_fraction, settings.seed + k)

        def remaining(frac, k=k):
            spent = time.perf_counter() - start
            done = k + frac
            return spent / done * (folds - done) if done > 0 else None

        loaded = fit_finder([train[i] for i in inner_train], [train[i] for i in inner_val], settings, progress, cancel,
                            fold=k, folds=folds, remaining=remaining, source=str(folder))
        learned = LearnedFinder("", preloaded=loaded, views=learned_views[0])
        test_pairs = [usable[i] for i in test_idx]
        row = {"fold": k + 1, "test": [p[0].relative_to(folder).as_posix() for p in test_pairs],
               "seed_threshold": loaded.card.seed_threshold, "peak_threshold": loaded.card.peak_threshold,
               "peak_threshold_choice": loaded.card.metrics.get("peak_threshold"), "training": loaded.card.training,
               "flags": loaded.card.metrics.get("flags", [])}
        classifiers: Dict[str, object] = {}
        on_outlines: Dict = {}   # the fold's classifiers on its outlined particles, shared by its finders
        with tempfile.TemporaryDirectory(prefix="emclassify-fold-") as workdir:
            if train_classifier:
                context = found_crop_context(loaded.card.median_diameter_px)
                t0 = time.perf_counter()
                def epochs(ev, k=k):  # the classifier's epochs, as this fold's (1-2 min without a word otherwise)
                    if isinstance(ev, EpochEnded):
                        emit(progress, replace(ev, fold=k, folds=folds))

                try:
                    classifiers[FOUND_CLASSIFIER], counts = classifier_on_found(train, learned, truths, Path(workdir),
                                                                                context, cancel, epochs)
                except (DatasetError, ValueError) as exc:  # e.g. too few particles found to train on
                    classifiers[FOUND_CLASSIFIER], counts = None, {}
                    row["flags"].append(f"no classifier could be trained on the particles found in the training "
                                        f"micrographs ({exc}); none of this fold's particles count as classified")
                row["found_classifier"] = {**counts, "context_px": context, "seconds": round(time.perf_counter() - t0, 1)}
            given = classifier_for([d.name for d in train]) if classifier_for is not None else None
            given = given if isinstance(given, dict) else ({"classifier": given} if given is not None else {})
            for which, clf in given.items():
                seen = classifier_saw(clf, row["test"])
                if seen:
                    row["flags"].append(f"classifier {which}: {seen}")
            classifiers.update(given)
            finders = [(learned_key(v), LearnedFinder("", preloaded=loaded, views=v)) for v in learned_views]
            for name, finder in finders + [("classical", classical)]:
                r = _evaluate_pairs(folder, test_pairs, finder, overlays if name == names[0] else None, classifiers,
                                    truths, on_outlines=on_outlines)
                results[name].append(r)
                row[name] = dict(r["overall"])
                if "end_to_end" in r:
                    row[name]["end_to_end_macro_f1"] = {c: e["macro_f1"] for c, e in r["end_to_end_by_classifier"].items()}
        fold_rows.append(row)
        emit(progress, FinderFoldEnded(k, folds, tuple(names), row))
    out = {"folder": str(folder), "folds": folds, "seed": seed, "iou_threshold": 0.5, "errors": errors, "finders": names,
           "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
           "per_fold": fold_rows, "seconds": round(time.perf_counter() - start, 1)}
    for name, rs in results.items():
        matches = [m for r in rs for m in r["_matches"]]
        merged = {"overall": summarise(matches) if rs else None,
                  "per_micrograph": [row for r in rs for row in r["per_micrograph"]]}
        if scored and rs and "end_to_end_by_classifier" in rs[0]:
            by = {c: end_to_end_scores([rec for r in rs for rec in r["_records"][c]], e["classes"],
                                       [rec for r in rs for rec in r["_outline_records"][c]])
                  for c, e in rs[0]["end_to_end_by_classifier"].items()}
            merged["end_to_end_by_classifier"] = by
            merged["end_to_end"] = next(iter(by.values()))
        out[name] = merged
    return out


def error_kinds_text(overall: Dict) -> str:
    """The misses and spurious particles of a :func:`~.matching.summarise` dict by kind, in words."""
    def part(key, words):
        if key not in overall:  # results written before errors had kinds
            return ""
        counts = ", ".join(f"{words.get(k, k)} {v}" for k, v in overall[key].items() if v)
        return f" ({counts})" if counts else ""

    missed = overall["true"] - overall["matched"]
    spurious = overall["found"] - overall["matched"]
    return (f"missed {missed}{part('missed_by_kind', MISSED_WORDS)}; "
            f"spurious {spurious}{part('spurious_by_kind', SPURIOUS_WORDS)}")


def _score_cells(o: Dict) -> str:
    iou = "–" if o.get("mean_iou") is None else f"{o['mean_iou']:.3f}"
    return (f"{o['true']} | {o['found']} | {o['matched']} | {o['precision']:.3f} | {o['recall']:.3f} | "
            f"**{o['f1']:.3f}** | {iou} | {o['count_error_abs_mean'] or 0:.1f}")


def report_markdown(result: Dict, overlays: Optional[str] = None) -> str:
    """A readable report of :func:`evaluate_finder` or :func:`cross_validate_finders` results: overall
    scores (both finders side by side after cross-validation), end-to-end scores, and one row per
    micrograph with a link to its overlay when overlays were written."""
    columns = "outlined | found | matched | precision | recall | F1 | mean IoU | mean abs. count error |"
    head = f"| finder | {columns}\n|---|---|---|---|---|---|---|---|---|"
    lines = [f"# Particle finding: {result['folder']}", "",
             "Found particles are matched to outlined ones at IoU >= 0.5 (one to one, Hungarian matching).",
             "Each error is given a kind from how the outlines overlap. A missed particle is *merged with a "
             "neighbour* when one found particle holds half or more of it and of another outlined particle, *cut "
             "into pieces* when several found particles hold a fifth or more of it each, *not found* when found "
             "particles hold less than half of it. A spurious particle *merges outlined particles* when it holds "
             "half or more of two or more, is a *piece of an outlined particle* when half or more of it lies inside "
             "one, and lies *where nothing is outlined* when under a fifth of it does (debris, or particles nobody "
             "outlined). The rest have an outline too far off.", ""]
    for w in result.get("warnings", []):
        lines += [f"**Warning:** {w}", ""]
    flagged = sorted({f for row in result.get("per_fold", []) for f in row.get("flags", [])})
    for f in flagged:
        lines += [f"**Warning (some folds):** {f}", ""]
    cv = "per_fold" in result
    named = ([(n, result[n]) for n in result.get("finders", ["learned", "classical"])] if cv
             else [(result["finder"]["finder"], result)])
    if cv:
        lines += [f"{result['folds']}-fold cross-validation by micrograph: the learned finder was trained on the other "
                  "micrographs of each fold and scored on the held-out ones, "
                  "beside the classical finder on the same micrographs"
                  + (" (learned_8_views: the same network, its maps averaged over the micrograph's 8 rotations "
                     "and reflections)" if "learned_8_views" in result else "") + ".", ""]
    lines += [head] + [f"| {n} | {_score_cells(r['overall'])} |" for n, r in named if r.get("overall")]
    lines += [""] + [f"- {n}: {error_kinds_text(r['overall'])}" for n, r in named if r.get("overall")]
    for n, r in named:
        scored = r.get("end_to_end_by_classifier") or ({"": r["end_to_end"]} if r.get("end_to_end") else {})
        for which, e in scored.items():
            per = ", ".join(f"{c} {v:.3f}" for c, v in e["per_class_f1"].items())
            by = f", classifier {which}" if which else ""
            lines += ["", f"End to end with the {n} finder{by} (found and classified vs outlined): macro-F1 "
                      f"**{e['macro_f1']:.3f}** ({per}); classes of the {e['matched_particles']} matched particles: "
                      f"macro-F1 {e['matched_macro_f1']:.3f}." + on_outlines_text(e) + unoutlined_text(e)]
    lines += ["", "## Per micrograph", "", f"| micrograph | finder | {columns}", "|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in named:
        for row in r.get("per_micrograph", []):
            name = row["micrograph"]
            if overlays and (not cv or n == named[0][0]):  # overlays are drawn for the (first) learned finder in CV
                name = f"[{name}]({Path(overlays) / (Path(row['micrograph']).stem + '.png')})"
            lines.append(f"| {name} | {n} | {_score_cells(row)} |")
    for e in result.get("errors", []):
        lines.append(f"\nError: {e['micrograph']}: {e['error']}")
    if overlays:
        lines += ["", f"Overlays in `{overlays}`: found outlines red, outlined particles green."]
    return "\n".join(lines) + "\n"
