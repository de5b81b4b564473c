"""Training the ``learned`` finder on outlined micrographs: ``emclassify train-finder``.

Input layout: that of :func:`emclassify.finding.evaluate.outlined_micrographs` (``images/`` and
``instances/`` of the same names; the NanoShapes micrographs and ``emclassify synth
--micrographs``). By default every micrograph trains the network and the thresholds stay at
0.5 / 0.5 (``defaults.FINDER_TRAINING`` says why); its accuracy is measured by cross-validation
(``find-eval --folds``). With ``val_fraction`` > 0, that share of whole micrographs is held out
(never pixels of a micrograph the network trained on): on them the seed threshold is chosen and
the learned finder is scored beside the classical one, on the card. After training, the centre-ness
peak an object must reach (``peak_threshold``, :func:`choose_peak_threshold`) is chosen for the
best F1 on the validation micrographs, or on the training ones when none are held out.

Recipe (measured on NanoShapes, BENCHMARKS.md "Finding particles"): random square crops
(``crop`` px, micrographs drawn in proportion to their area), the 8 rotations/reflections,
gain, offset and Gaussian noise on the normalised intensities; loss = BCE + Dice on the
foreground plus 2 x the squared error of the centre-ness; AdamW with a one-cycle schedule.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from .. import ops
from ..contrast import particle_contrasts, polarity_record
from ..defaults import FINDER_TRAINING
from ..events import FinderStep, Progress, emit
from ..io import ImageReadError, read_image
from ..runtime import (CancelToken, autocast_steps, check_precision, resolve_device, reuse_freed_memory,
                       training_autocast_dtype)
from .finderfile import FinderCard, LoadedFinder
from .learned import LearnedFinder
from .matching import match_instances, summarise
from .unet import FinderNet, normalise_micrograph

# Seed thresholds tried on the validation micrographs (the foreground threshold stays 0.5: the
# foreground map is sharp, and on NanoShapes 0.4..0.6 changed F1 by under 0.01).
SEED_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# Centre-ness peaks an object must reach to be kept, tried after training (module doc).
PEAK_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
# Micrographs, in a seeded random order, are run to choose it until this many megapixels (at least
# one micrograph): ~1.5 min of the network on 2 cores (BENCHMARKS.md "Throughput of the learned
# finder"), whatever the micrographs' number and size. All 31 NanoShapes micrographs are 5.4 Mpx.
PEAK_CHOICE_MEGAPIXELS = 64.0
MIN_AREA_SHARE = 0.25   # objects under this share of the training particles' 5th-percentile area are dropped
MIN_MICROGRAPHS = 2


class FinderTrainingError(Exception):
    """Training cannot run on this data; the message says why."""


@dataclass(frozen=True)
class FinderTrainSettings:
    """How a finder is trained (the one source of these defaults; CLI and GUI read them here)."""

    steps: int = FINDER_TRAINING["steps"]
    batch: int = FINDER_TRAINING["batch"]
    crop: int = FINDER_TRAINING["crop"]
    learning_rate: float = FINDER_TRAINING["learning_rate"]
    weight_decay: float = FINDER_TRAINING["weight_decay"]
    widths: Tuple[int, ...] = FINDER_TRAINING["widths"]
    val_fraction: float = FINDER_TRAINING["val_fraction"]
    seed: int = FINDER_TRAINING["seed"]
    device: str = FINDER_TRAINING["device"]   # auto: a CUDA GPU when there is one (runtime.resolve_device)
    precision: str = FINDER_TRAINING["precision"]  # the steps' forward pass: runtime.training_autocast_dtype

    def __post_init__(self) -> None:
        for key in ("steps", "batch", "crop"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be a positive whole number")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        check_precision(self.precision)
        try:
            resolve_device(self.device)   # cuda without a usable GPU is refused now, not after loading
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None


@dataclass
class OutlinedMicrograph:
    """One training micrograph: normalised image, instance labels and the two target maps (all H x W)."""

    name: str
    image: np.ndarray       # float32, normalised (unet.normalise_micrograph)
    raw: np.ndarray         # as read, for scoring finders on it
    labels: np.ndarray      # int32 instance labels
    foreground: np.ndarray  # float32 0/1
    centre: np.ndarray      # float32 0..1
    label_ids: np.ndarray   # int64: label_ids[k] is the number particle k had in the instance file


def centreness_target(labels: np.ndarray) -> np.ndarray:
    """float32 (H, W): per particle, the distance to its own edge over its largest such distance
    (1 at the centre); 0 on the background. Touching particles each get their own peak."""
    out = np.zeros(labels.shape, np.float32)
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == k
        dist = ops.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        peak = dist.max()
        if peak > 0:
            out[box][mask] = (dist / peak)[mask]
    return out


def load_outlined(pairs: Sequence[tuple], root: Optional[Path] = None
                  ) -> Tuple[List[OutlinedMicrograph], List[Dict[str, str]]]:
    """Read (micrograph, instance source) pairs (:func:`~.evaluate.outlined_micrographs`); unreadable
    or mismatched ones are listed as errors."""
    from .evaluate import read_instances

    good, errors = [], []
    for image_path, source in pairs:
        name = image_path.relative_to(root).as_posix() if root else image_path.name
        try:
            raw = read_image(image_path, with_pixel_size=False).array
            labels = read_instances(source, raw.shape)
        except ImageReadError as exc:
            errors.append({"micrograph": name, "error": str(exc)})
            continue
        except ValueError as exc:
            errors.append({"micrograph": name, "error": str(exc)})
            continue
        if not np.issubdtype(labels.dtype, np.integer):
            # the image reader widens 32-bit integers to float32: whole-number values are labels
            if not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
                errors.append({"micrograph": name, "error": "instance image holds fractions, not particle numbers"})
                continue
            labels = labels.astype(np.int64)
        if labels.size and labels.min() < 0:
            errors.append({"micrograph": name, "error": "instance image has negative labels (0 is background, "
                                                        "1, 2, ... the particles)"})
            continue
        # 1..n whatever numbers the file used (a 32-bit label 4e9 must not size any array); the
        # sorted numbers map to 1..n in order, so label_ids keeps each one's own number
        ids = np.union1d([0], np.unique(labels)).astype(np.int64)
        labels = relabel_sequential(labels)[0].astype(np.int32)
        good.append(OutlinedMicrograph(name, normalise_micrograph(raw), raw, labels,
                                       (labels > 0).astype(np.float32), centreness_target(labels), ids))
    return good, errors


def split_validation(n: int, fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """(training, validation) indices: round(fraction * n) whole micrographs held out, at least
    one when fraction > 0, and never all but none for training."""
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    k = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(int(i) for i in order[:k])
    return [i for i in range(n) if i not in set(val)], val


def _sample(rng: np.random.Generator, data: Sequence[OutlinedMicrograph], weights: np.ndarray, crop: int):
    """One augmented (image, foreground, centre) crop, float32 each (crop x crop)."""
    m = data[rng.choice(len(data), p=weights)]
    image, fg, centre = m.image, m.foreground, m.centre
    H, W = image.shape
    if H < crop or W < crop:  # small micrographs are padded (edge values; zero targets)
        pad = ((0, max(0, crop - H)), (0, max(0, crop - W)))
        image, fg, centre = np.pad(image, pad, mode="edge"), np.pad(fg, pad), np.pad(centre, pad)
        H, W = image.shape
    y, x = rng.integers(0, H - crop + 1), rng.integers(0, W - crop + 1)
    # cut first, then stack: stacking whole maps would copy the micrograph three times per crop
    window = (slice(y, y + crop), slice(x, x + crop))
    stack = np.stack([image[window], fg[window], centre[window]])
    a = np.rot90(stack, int(rng.integers(4)), axes=(1, 2))
    if rng.random() < 0.5:
        a = a[:, :, ::-1]
    a = np.array(a, dtype=np.float32)
    noise = rng.normal(0.0, rng.uniform(0.0, 0.1), a[0].shape).astype(np.float32)
    a[0] = a[0] * np.float32(rng.uniform(0.7, 1.3)) + np.float32(rng.uniform(-0.3, 0.3)) + noise
    return a


def _loss(out: torch.Tensor, fg: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(out[:, 0])
    dice = 1 - (2 * (p * fg).sum() + 1) / (p.sum() + fg.sum() + 1)
    return (F.binary_cross_entropy_with_logits(out[:, 0], fg) + dice
            + 2.0 * F.mse_loss(torch.sigmoid(out[:, 1]), centre))


def train_network(data: Sequence[OutlinedMicrograph], settings: FinderTrainSettings,
                  progress: Optional[Progress] = None, cancel: Optional[CancelToken] = None,
                  fold: Optional[int] = None, folds: Optional[int] = None,
                  remaining: Optional[Callable[[float], Optional[float]]] = None) -> Tuple[FinderNet, Dict]:
    """Fit a :class:`FinderNet` on ``data``; returns it (eval mode) and a record of the run.

    Stops early, keeping the network as it is, on ``cancel`` or Ctrl-C (record ``stopped``).
    remaining: maps this run's fraction done to the seconds left in the whole call.
    """
    reuse_freed_memory()
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    m = 2 ** (len(settings.widths) - 1)
    crop = max(m, settings.crop // m * m)
    device = resolve_device(settings.device)
    autocast = training_autocast_dtype(settings.precision, device)
    net = FinderNet(settings.widths).to(device=device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), settings.learning_rate, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.learning_rate, total_steps=settings.steps,
                                                pct_start=0.15)
    areas = np.asarray([d.image.size for d in data], np.float64)
    weights = areas / areas.sum()
    net.train()
    start, stopped, losses, done = time.perf_counter(), "completed", [], 0
    report_every = max(1, min(10, settings.steps // 20))
    try:
        for step in range(1, settings.steps + 1):
            if cancel is not None and cancel.cancelled:
                stopped = "cancelled"
                break
            batch = np.stack([_sample(rng, data, weights, crop) for _ in range(settings.batch)])
            x = torch.from_numpy(batch[:, :1]).to(device).contiguous(memory_format=torch.channels_last)
            with autocast_steps(device, autocast):
                out = net(x)
            loss = _loss(out.float(), torch.from_numpy(batch[:, 1]).to(device), torch.from_numpy(batch[:, 2]).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            done = step
            if step % report_every == 0 or step == settings.steps:
                left = remaining(step / settings.steps) if remaining else None
                emit(progress, FinderStep(step, settings.steps, float(np.mean(losses[-report_every:])), fold, folds, left))
    except KeyboardInterrupt:
        stopped = "interrupted"
    net.eval()
    record = {"steps_done": done, "stopped": stopped, "seconds": round(time.perf_counter() - start, 1),
              "device": str(device), "precision": "float32" if autocast is None else "bfloat16",
              "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None, "crop": crop}
    return net, record


def scale_of(data: Sequence[OutlinedMicrograph]) -> Tuple[float, float, int]:
    """(median equivalent-circle diameter px, minimum area px, particle count) of the training particles."""
    areas = np.concatenate([np.bincount(d.labels.ravel())[1:] for d in data]) if data else np.zeros(0)
    areas = areas[areas > 0]
    if not len(areas):
        raise FinderTrainingError("the training micrographs hold no outlined particles")
    diam = 2.0 * np.sqrt(areas / math.pi)
    return float(np.median(diam)), max(4.0, MIN_AREA_SHARE * float(np.percentile(areas, 5))), int(len(areas))


def score_on(finder, data: Sequence[OutlinedMicrograph]) -> Dict:
    """The finder's F1 / IoU / count error over ``data`` (matching at IoU >= 0.5)."""
    return summarise([match_instances(finder.find(d.raw).labels, d.labels) for d in data])


def _scores_by_cut(finder: LearnedFinder, data: Sequence[OutlinedMicrograph], cuts: Dict[float, Dict],
                   megapixels: Optional[float] = None, seed: int = 0, cancel: Optional[CancelToken] = None
                   ) -> Optional[Tuple[Dict[float, Dict], int, float, Dict[float, List[float]]]]:
    """Score each cut (``cuts``: key -> keyword arguments of :meth:`LearnedFinder.detections`) on
    ``data``: the network runs once per micrograph, one micrograph's maps in memory at a time.
    With ``megapixels``, micrographs in a seeded random order until that many (at least one).
    Returns ({key: summary}, micrographs used, megapixels used, {key: detection score of every
    particle found}), or None on ``cancel``."""
    matches: Dict[float, list] = {k: [] for k in cuts}
    found_scores: Dict[float, List[float]] = {k: [] for k in cuts}
    used, mpx = 0, 0.0
    order = np.random.default_rng(seed).permutation(len(data)) if megapixels is not None else range(len(data))
    for i in order:
        d = data[i]
        if cancel is not None and cancel.cancelled:
            return None
        if megapixels is not None and used and mpx + d.raw.size / 1e6 > megapixels:
            continue
        used, mpx = used + 1, mpx + d.raw.size / 1e6
        fg, centre, scale = finder.maps(d.raw)
        for k, kwargs in cuts.items():
            det = finder.detections(fg, centre, scale, **kwargs)
            matches[k].append(match_instances(det.labels, d.labels))
            found_scores[k].extend(p.score for p in det.particles)
    return {k: summarise(m) for k, m in matches.items()}, used, mpx, found_scores


def choose_seed_threshold(finder: LearnedFinder, data: Sequence[OutlinedMicrograph]) -> Tuple[float, Dict]:
    """The seed threshold of :data:`SEED_THRESHOLDS` with the best F1 on ``data`` (ties: closest to 0.5),
    and the score there. The network runs once per micrograph; only the cut is varied."""
    scores = _scores_by_cut(finder, data, {t: {"thresholds": (0.5, t)} for t in SEED_THRESHOLDS})[0]
    best = max(sorted(SEED_THRESHOLDS, key=lambda t: abs(t - 0.5)), key=lambda t: scores[t]["f1"])
    return best, scores[best]


def choose_peak_threshold(finder: LearnedFinder, data: Sequence[OutlinedMicrograph], seed: int = 0,
                          cancel: Optional[CancelToken] = None) -> Tuple[float, Dict]:
    """The centre-ness peak threshold, none (0) or one of :data:`PEAK_THRESHOLDS` above the card's
    seed threshold, with the best F1 on ``data`` (ties: the lowest, which drops least), and a
    record: micrographs used, F1 per threshold, and the detection scores of the particles found
    with it (``detection_scores``: :func:`detection_score_reference`).

    Up to :data:`PEAK_CHOICE_MEGAPIXELS` of micrographs (bounded time). On ``cancel``: none, and
    the record says so.
    """
    seed_t = finder.loaded.card.seed_threshold
    candidates = [0.0] + [t for t in PEAK_THRESHOLDS if t > seed_t]   # 0: none
    scored = _scores_by_cut(finder, data, {t: {"peak_threshold": t} for t in candidates},
                            PEAK_CHOICE_MEGAPIXELS, seed, cancel)
    if scored is None:
        return 0.0, {"micrographs": 0, "cancelled": True}
    scores, used, mpx, found_scores = scored
    f1 = {t: scores[t]["f1"] for t in candidates}
    best = max(candidates, key=lambda t: (f1[t], -t))
    return best, {"micrographs": used, "megapixels": round(mpx, 2),
                  "f1_by_threshold": {f"{t:g}": round(v, 4) for t, v in f1.items()},
                  "detection_scores": detection_score_reference(found_scores[best])}


def particle_polarity(data: Sequence[OutlinedMicrograph]) -> Tuple[Optional[str], Dict]:
    """The contrast of the outlined particles (:func:`emclassify.contrast.polarity_record`): ``dark`` or
    ``bright`` when at least :data:`~emclassify.contrast.POLARITY_AGREEMENT` of them agree, else None
    (mixed), with a record for the card (particles compared, share darker)."""
    diffs = np.concatenate([particle_contrasts(d.image, d.labels) for d in data]) if data else np.zeros(0)
    record = polarity_record(diffs)
    return record.pop("polarity"), record


def detection_score_reference(scores: Sequence[float]) -> Dict:
    """What the particles a finder found on its own micrographs scored: count, 5th percentile and
    median of their detection scores (the card's ``metrics["detection_scores"]``; a micrograph whose
    particles score far below it is flagged, :func:`emclassify.finding.learned.score_warning`)."""
    values = np.asarray(scores, dtype=np.float64)
    if not len(values):
        return {"particles": 0}
    return {"particles": int(len(values)), "q05": round(float(np.quantile(values, 0.05)), 4),
            "median": round(float(np.median(values)), 4)}


def _brief(s: Dict) -> Dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}


def fit_finder(train: Sequence[OutlinedMicrograph], val: Sequence[OutlinedMicrograph],
               settings: FinderTrainSettings, progress: Optional[Progress] = None,
               cancel: Optional[CancelToken] = None, fold: Optional[int] = None, folds: Optional[int] = None,
               remaining=None, source: str = "") -> LoadedFinder:
    """Train on ``train``, choose thresholds and score on ``val`` (beside the classical finder)."""
    from .classical import ClassicalFinder

    median_d, min_area, n_particles = scale_of(train)
    polarity, contrast = particle_polarity(train)
    net, record = train_network(train, settings, progress, cancel, fold, folds, remaining)
    card = FinderCard(widths=list(settings.widths), median_diameter_px=round(median_d, 3),
                      min_area_px=round(min_area, 1), polarity=polarity,
                      training={**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
                                **record},
                      data={"source": source, "micrographs": len(train), "particles": n_particles,
                            "names": [d.name for d in train],
                            "validation_names": [d.name for d in val]})
    card.metrics["particle_contrast"] = contrast
    loaded = LoadedFinder(net, card)
    finder = LearnedFinder("", preloaded=loaded)
    flags = []
    if polarity is None and contrast["particles"]:
        flags.append(f"the training particles are of mixed contrast ({contrast['darker_share']:.0%} darker than their "
                     "surroundings): --polarity cannot be used with this finder")
    if record["stopped"] != "completed":
        flags.append(f"training {record['stopped']} after {record['steps_done']} of {settings.steps} steps")
    if val:
        card.seed_threshold = choose_seed_threshold(finder, val)[0]
    if record["stopped"] == "completed":   # a stopped run is wanted back now, as it stands
        # on the validation micrographs where there are some, else on the training ones: the network
        # scores those nearly as it scores new ones (NanoShapes folds 3 and 4: F1 0.936 / 0.929 on
        # its own micrographs, 0.930 / 0.884 held out), and both chose 0.55 there as held out
        card.peak_threshold, choice = choose_peak_threshold(finder, val or train, settings.seed, cancel)
        chosen_on = "validation micrographs" if val else "training micrographs"
        reference = choice.pop("detection_scores", None)
        card.metrics["peak_threshold"] = {"chosen_on": chosen_on, **choice}
        if reference and reference["particles"]:
            card.metrics["detection_scores"] = {"on": chosen_on, "micrographs": choice["micrographs"], **reference}
    if val:
        learned = score_on(finder, val)
        classical = score_on(ClassicalFinder(), val)
        card.metrics["validation"] = {"micrographs": len(val), "learned": _brief(learned),
                                      "classical": _brief(classical)}
        if learned["f1"] <= classical["f1"]:
            flags.append(f"on the {len(val)} validation micrographs the learned finder (F1 {learned['f1']:.3f}) "
                         f"does not beat the classical one (F1 {classical['f1']:.3f}): use --finder classical "
                         "or train on more outlined micrographs")
    elif fold is None:  # in cross-validation the held-out fold is the validation
        flags.append("not validated: no micrographs were held out (measure it with `emclassify find-eval --folds 5`)")
    card.metrics["flags"] = flags
    return loaded


def train_finder(folder, settings: FinderTrainSettings = FinderTrainSettings(), progress: Optional[Progress] = None,
                 cancel: Optional[CancelToken] = None) -> Tuple[LoadedFinder, List[Dict[str, str]]]:
    """``emclassify train-finder FOLDER``: the trained finder and the micrographs that could not be read."""
    from .evaluate import outlined_micrographs

    folder = Path(folder)
    data, errors = load_outlined(outlined_micrographs(folder), folder)
    if len(data) < MIN_MICROGRAPHS:
        raise FinderTrainingError(f"{folder}: {len(data)} usable outlined micrograph(s); at least {MIN_MICROGRAPHS} "
                                  "are needed" + (f" ({len(errors)} could not be read)" if errors else ""))
    train_idx, val_idx = split_validation(len(data), settings.val_fraction, settings.seed)
    loaded = fit_finder([data[i] for i in train_idx], [data[i] for i in val_idx], settings, progress, cancel,
                        source=str(folder))
    if errors:
        loaded.card.metrics.setdefault("flags", []).append(f"{len(errors)} micrograph(s) could not be read and were left out")
    return loaded, errors
