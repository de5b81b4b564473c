"""Classifying images: a :class:`Classifier` and the streaming :func:`classify_folder`.

``classify_folder`` is what ``emclassify batch`` and the GUI run: it lists the
folder, decodes images in background threads (overlapping I/O with compute),
preprocesses and classifies them in batches, and yields one
:class:`BatchResult` per batch with progress figures, so callers can show
progress and stop at any batch boundary (:class:`CancelToken`). Memory stays
flat: only the batches in flight are held.
"""
from __future__ import annotations

import os

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterator, List, Optional, Sequence

import numpy as np
import torch

from . import ops
from .contrast import card_polarity, mask_contrast, other_contrast_warning
from .features import FeatureCache, particle_features
from .finding.detections import Particle, ParticleSize
from .input_decision import size_warning
from .io import (FolderListing, ImageReadError, Sample, has_undecodable_name, list_images, read_image,
                 read_mask)
from .modelfile import TrainedModel, load_model
from .models import input_kind, model_logits
from .preprocess import PreprocessConfig
from .runtime import CancelToken, resolve_device  # noqa: F401 - re-exported (their home is emclassify.runtime)
from .segment import auto_mask, mask_warnings


@dataclass
class FileResult:
    """The outcome for one file: a CSV row of the lab record.

    In a micrograph run (:mod:`emclassify.micrographs`) a row is one particle: ``path`` is the
    micrograph, ``particle`` the particle found in it (box, centroid, size, detection score),
    and a micrograph in which none were found gets one row of status ``none_found``.

    probabilities: one float per class (model output order) when ``status == "ok"``.
    mask: relative path of the mask that was used ("" if none).
    size: the particle's area and equivalent diameter from its mask (given, found or automatic
    segmentation), with nm figures when the pixel size is known; None without a mask.
    """

    path: str
    sha256: str = ""
    status: str = "ok"
    error: str = ""
    predicted_class: str = ""
    confidence: Optional[float] = None
    probabilities: Optional[List[float]] = None
    width: Optional[int] = None
    height: Optional[int] = None
    mask: str = ""
    warnings: List[str] = field(default_factory=list)
    size: Optional[ParticleSize] = None
    particle: Optional[Particle] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """An error row (a file or particle that could not be classified); ``none_found`` is not."""
        return self.status == "error"


@dataclass
class BatchResult:
    """One batch's rows plus run progress (``done``/``total`` files, seconds, files/s, ETA s)."""

    results: List[FileResult]
    done: int
    total: int
    elapsed: float
    rate: float
    eta: Optional[float]
    listing: Optional[FolderListing] = None


class Classifier:
    """A trained model ready to classify raw images.

    >>> clf = Classifier.from_file("model.safetensors")
    >>> probs = clf.predict_proba([image], [mask])   # float64 N x C
    """

    def __init__(self, trained: TrainedModel, device: str = "auto"):
        self.trained = trained
        self.card = trained.card
        self.classes = list(trained.card.classes)
        self.config = trained.card.preprocess
        self.kind = input_kind(trained.model)
        # The SVM is tiny and float64: it stays on the CPU.
        self.device = resolve_device(device) if self.kind != "features" else torch.device("cpu")
        self.model = trained.model.to(self.device).eval()
        # Calibrated probabilities: the temperature fitted on held-out data when the model was trained
        # (emclassify.calibration); 1.0 for models trained before calibration existed.
        self.temperature = float((self.card.metrics.get("calibration") or {}).get("temperature", 1.0))
        # Test-time augmentation as the model was assessed with (models from before it existed: none).
        self.tta = bool(self.card.training.get("tta", False)) and self.kind != "features"

    @classmethod
    def from_file(cls, path, device: str = "auto") -> "Classifier":
        return cls(load_model(path), device=device)

    def images_per_batch(self, requested: int) -> int:
        """``requested``, lowered so one batch's activations stay under :data:`BATCH_MEMORY_BYTES`.

        Estimate per image: input side² × 4 bytes × 2 × the widest conv layer's channels (its
        input and output maps live at once); the inputs of LipNet models (32-128 px) never hit
        the bound at the default batch of 64, a card declaring 512 px does.
        """
        if self.kind == "features":
            return requested
        widest = max((m.out_channels for m in self.model.modules() if isinstance(m, torch.nn.Conv2d)), default=1)
        per_image = self.config.size ** 2 * 4 * 2 * widest
        return max(1, min(requested, BATCH_MEMORY_BYTES // per_image))

    @property
    def training_image_sides(self) -> Optional[dict]:
        """The card's ``data.image_sides_px`` (:func:`~emclassify.input_decision.image_side_stats`) when
        complete, else None (models made before it): what :func:`size_warning` compares with."""
        sides = self.card.data.get("image_sides_px") if isinstance(self.card.data, dict) else None
        keys = ("longer_p95", "shorter_p5", "shorter_median", "longer_median")
        return sides if isinstance(sides, dict) and all(isinstance(sides.get(k), int) for k in keys) else None

    @property
    def particle_polarity(self) -> Optional[str]:
        """``dark`` or ``bright``: the contrast of the particles the model learnt (the card's
        ``data.particle_contrast``, :mod:`emclassify.contrast`); None when mixed or not recorded."""
        return card_polarity(self.card.data)

    @property
    def needs_features(self) -> bool:
        """True when the model takes handcrafted features (SVM, fusion)."""
        return self.kind != "image"

    @torch.inference_mode()
    def predict_proba(self, images: Sequence, masks: Optional[Sequence] = None,
                      features: Optional[np.ndarray] = None) -> np.ndarray:
        """Raw 2-D images (+ masks) -> class probabilities, float64 ``N x C``.

        features: ``N x F`` handcrafted features when already computed (else computed here
        for models that need them, from the masks or automatic segmentation).
        """
        if len(images) == 0:
            return np.zeros((0, len(self.classes)))
        if self.needs_features and features is None:
            ms = masks if masks is not None else [None] * len(images)
            features = np.stack([particle_features(im, m) for im, m in zip(images, ms)])
        x = None if self.kind == "features" else ops.preprocess(images, masks, self.config)
        return self.predict_proba_inputs(x, features)

    @torch.inference_mode()
    def predict_proba_inputs(self, x: Optional[torch.Tensor], features: Optional[np.ndarray]) -> np.ndarray:
        """Preprocessed inputs (float32 ``N x 1 x S x S``, None for the SVM) and features -> float64 ``N x C``."""
        f = torch.as_tensor(np.asarray(features)).to(self.device) if self.needs_features else None
        x = None if x is None else x.to(self.device, non_blocking=True)
        logits = model_logits(self.model, x, f, self.tta)
        return torch.softmax(logits.double() / self.temperature, dim=1).cpu().numpy()


@dataclass
class _Loaded:
    """A decoded sample. Large images arrive already preprocessed (``input``, ``image`` dropped)."""

    result: FileResult
    image: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    features: Optional[np.ndarray] = None
    input: Optional[torch.Tensor] = None  # float32 1 x S x S


# Images above this many pixels are preprocessed as soon as they are decoded, in the decoding thread,
# and only their S x S model input is kept: a batch then holds at most ``batch_size`` images of at most
# this size plus S x S inputs, so its memory is bounded by bytes, not only by count (an 8192² image is
# 256 MB as float32; 64 of them would be 16 GB). Small images are kept for one batched native call.
LARGE_IMAGE_PIXELS = 2**20
# Images per batch of a folder run (emclassify.defaults), for the CLI and the GUI alike.
from .defaults import DEFAULT_BATCH_SIZE  # noqa: E402
# Activation memory one batch may take (see Classifier.images_per_batch).
BATCH_MEMORY_BYTES = 2**30
# How a row's warnings say that no given mask cut its region (load_for_model); the run counts such rows
# (emclassify.batch.build_summary) because a model trained on mask-cut particles sees another view in them.
NO_MASK_NOTE = "no mask found"
EMPTY_MASK_NOTE = "mask is empty"


def region_fell_back(warnings: Sequence[str]) -> bool:
    """True when a row of a model whose input uses masks (``crop``, ``mask``) was cut without a given
    mask: a warning starts with :data:`NO_MASK_NOTE` or :data:`EMPTY_MASK_NOTE`. Only the prefix is
    compared, since a record read back from its CSV has its warnings split at "; "."""
    return any(w.startswith((NO_MASK_NOTE, EMPTY_MASK_NOTE)) for w in warnings)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def load_for_model(sample: Sample, root: Path, cfg: PreprocessConfig, want_features: bool = False,
                   cache: Optional[FeatureCache] = None, prepare_large: bool = False,
                   pixel_size_nm: Optional[float] = None, polarity: Optional[str] = None) -> _Loaded:
    """Decode one sample and its mask as the model needs; errors become an error row.

    Mask rule: ``surround`` reads no mask (unless features are wanted). ``crop`` uses
    the mask when found, else removes ``cfg.margin`` px per side (noted on the row).
    ``mask`` uses the mask when found, else :func:`emclassify.segment.auto_mask`; the
    handcrafted features likewise (noted on the row). What the network sees never
    depends on whether the model also takes features.

    A region under :data:`~emclassify.preprocess.MIN_REGION_SIDE` px is an error row (too small
    to classify). prepare_large: preprocess images over :data:`LARGE_IMAGE_PIXELS` here and keep
    only the model input. pixel_size_nm: overrides the file's own (for the nm sizes). polarity: the
    contrast of the model's training particles (:attr:`Classifier.particle_polarity`); a particle with a
    given mask of the other contrast is noted on its row (:func:`emclassify.contrast.other_contrast_warning`).
    """
    result = FileResult(path=sample.relpath)
    if has_undecodable_name(sample.path):
        result.warnings.append("file name is not valid UTF-8; its path is written with \\xNN escapes")
    try:
        loaded = read_image(sample.path)
    except ImageReadError as exc:
        result.status, result.error = "error", exc.reason
        return _Loaded(result)
    result.sha256 = loaded.sha256
    result.height, result.width = loaded.height, loaded.width
    result.warnings.extend(loaded.warnings)
    # Two masks with two jobs. The region mask decides what the network sees and must not depend on
    # whether the model also takes handcrafted features (a plain CNN and a fusion in the same mode
    # see the same pixels, in training and in batch alike): the given mask; in ``mask`` mode,
    # automatic segmentation when none is given; in ``crop`` mode without one, the margin crop.
    # The feature mask (given, else automatic segmentation) only feeds the handcrafted features.
    # A given mask is read even when the model does not look at it (surround, no features): the
    # particle's size, the mask checks and its contrast come from it. Only a model that needs it
    # loses the row to an unreadable one.
    given = None
    if sample.mask is not None:
        try:
            given = read_mask(sample.mask, loaded.array.shape)
        except ImageReadError as exc:
            problem = f"mask {_relative(Path(exc.path), root)}: {exc.reason}"
            if cfg.uses_mask or want_features:
                result.status, result.error = "error", problem
                return _Loaded(result)
            result.warnings.append(problem.replace("; ", ", ") + " (this model does not need it: classified "
                                   "without it, and no size is given)")
    if given is not None:
        result.mask = _relative(sample.mask, root)
        if cfg.uses_mask and not given.any():
            result.warnings.append(f"{EMPTY_MASK_NOTE}; central crop with {cfg.margin} px margin used")
        result.warnings.extend(mask_warnings(given))
        note = other_contrast_warning(mask_contrast(loaded.array, given), polarity) if polarity else ""
        if note:
            result.warnings.append(note)
    auto = None
    if given is None and (cfg.mode == "mask" or want_features):
        auto = auto_mask(loaded.array)
    if cfg.mode == "mask" and given is None:
        result.warnings.append(f"{NO_MASK_NOTE}; automatic segmentation used"
                               + ("" if auto.any() else f" (found nothing; central crop with {cfg.margin} px margin)"))
    elif cfg.mode == "crop" and given is None:
        result.warnings.append(f"{NO_MASK_NOTE}; central crop with {cfg.margin} px margin used")
    if want_features and given is None:
        result.warnings.append("no mask found; handcrafted features from automatic segmentation")
    region_mask = given if given is not None else (auto if cfg.mode == "mask" else None)
    if not cfg.uses_mask:
        region_mask = None
    problem = cfg.region_problem(loaded.height, loaded.width, region_mask)
    if problem is not None:
        result.status, result.error = "error", problem
        return _Loaded(result)
    size_mask = given if given is not None else auto
    pixel = pixel_size_nm if pixel_size_nm is not None else loaded.pixel_size_nm
    result.size = ParticleSize.from_mask(size_mask, pixel) if size_mask is not None else None
    features = None
    if want_features:
        cache = cache or FeatureCache()
        features = cache.get_or_compute(loaded.sha256, loaded.array, given if given is not None else auto)
    if prepare_large and loaded.array.size > LARGE_IMAGE_PIXELS:
        return _Loaded(result, None, None, features, ops.preprocess([loaded.array], [region_mask], cfg)[0])
    return _Loaded(result, loaded.array, region_mask, features)


def _model_inputs(items: Sequence[_Loaded], cfg: PreprocessConfig, wanted: bool) -> Optional[torch.Tensor]:
    """float32 ``N x 1 x S x S`` for decoded items: raw images preprocessed in one call, early ones reused."""
    if not wanted:
        return None
    raw = [i for i, it in enumerate(items) if it.input is None]
    if len(raw) == len(items):
        return ops.preprocess([it.image for it in items], [it.mask for it in items], cfg)
    x = torch.empty((len(items), 1, cfg.size, cfg.size), dtype=torch.float32)
    if raw:
        x[raw] = ops.preprocess([items[i].image for i in raw], [items[i].mask for i in raw], cfg)
    for i, it in enumerate(items):
        if it.input is not None:
            x[i] = it.input
    return x


def batched(seq: Sequence, size: int) -> List[Sequence]:
    """Consecutive slices of ``seq`` of ``size`` items (the last may be shorter)."""
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def default_decode_workers() -> int:
    """Decoding threads for folder runs: half the logical CPUs, 1 to 4.

    Why: decoding is mostly Python (GIL-bound) and shares the cores with the
    model's compute threads; on a 2-core machine one reader thread measured
    ~15 % faster end to end than four (BENCHMARKS.md).
    """
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def classify_folder(
    folder,
    classifier: Classifier,
    batch_size: int = DEFAULT_BATCH_SIZE,
    skip: Collection[str] = (),
    cancel: Optional[CancelToken] = None,
    workers: Optional[int] = None,
    prefetch: int = 2,
    listing: Optional[FolderListing] = None,
    pixel_size_nm: Optional[float] = None,
) -> Iterator[BatchResult]:
    """Classify every image under ``folder``, yielding a :class:`BatchResult` per batch.

    skip: relative paths not to process (``--resume``). Files that fail to decode
    give ``status="error"`` rows and the run goes on. Stops early (after the
    batch in progress) when ``cancel`` is cancelled.
    """
    if batch_size < 1:
        raise ValueError("batch size must be >= 1")
    listing = listing or list_images(folder)
    batch_size = classifier.images_per_batch(batch_size)
    todo = [s for s in listing.samples if s.relpath not in skip]
    total = len(todo)
    cfg = classifier.config
    cache = FeatureCache() if classifier.needs_features else None
    start = time.perf_counter()
    done = 0

    prepare_large = classifier.kind != "features"
    sides = classifier.training_image_sides
    polarity = classifier.particle_polarity

    def load_batch(batch: Sequence[Sample]) -> List[_Loaded]:
        return list(pool.map(lambda s: load_for_model(s, listing.root, cfg, classifier.needs_features, cache,
                                                      prepare_large, pixel_size_nm, polarity), batch))

    workers = default_decode_workers() if workers is None else max(1, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emclassify-read") as pool:
        # A single reader thread keeps batches in order; each batch fans out over the pool.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="emclassify-batch") as batcher:
            pending = deque()
            batches = iter(batched(todo, batch_size))
            for _ in range(max(1, prefetch)):
                nxt = next(batches, None)
                if nxt is not None:
                    pending.append(batcher.submit(load_batch, nxt))
            while pending:
                if cancel is not None and cancel.cancelled:
                    for f in pending:
                        f.cancel()
                    return
                loaded = pending.popleft().result()
                for item in loaded:
                    if item.result.ok and sides:
                        note = size_warning(item.result.height, item.result.width, sides)
                        if note:
                            item.result.warnings.append(note)
                nxt = next(batches, None)
                if nxt is not None:
                    pending.append(batcher.submit(load_batch, nxt))
                good = [item for item in loaded if item.result.ok]
                if good:
                    try:
                        feats = np.stack([g.features for g in good]) if classifier.needs_features else None
                        probs = classifier.predict_proba_inputs(_model_inputs(good, cfg, prepare_large), feats)
                    except (RuntimeError, ValueError) as exc:  # e.g. out of memory: rows, not a crash
                        for g in good:
                            g.result.status, g.result.error = "error", f"classification failed: {exc}"
                        probs = None
                    if probs is not None:
                        for g, p in zip(good, probs):
                            k = int(np.argmax(p))
                            g.result.probabilities = [float(v) for v in p]
                            g.result.predicted_class = classifier.classes[k]
                            g.result.confidence = float(p[k])
                done += len(loaded)
                elapsed = time.perf_counter() - start
                rate = done / elapsed if elapsed > 0 else 0.0
                eta = (total - done) / rate if rate > 0 else None
                yield BatchResult([item.result for item in loaded], done, total, elapsed, rate, eta, listing)

