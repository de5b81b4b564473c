"""Training a model: images decoded and preprocessed once, then epochs on tensors.

- :func:`load_inputs`: dataset samples -> :class:`InputSet` (float32 ``N x 1 x S x S``
  inputs, optional handcrafted features, labels, groups); bad files are skipped
  with their reason, never a crash.
- :func:`fit`: a LipNet or ``<lipnet>+features`` fusion, with augmentation,
  class-imbalance handling, weight decay, label smoothing, dropout and early
  stopping on a validation split, restoring the best epoch.
- :func:`fit_model`: any architecture (including ``svm``) on an InputSet split.
- :func:`train`: the whole of ``emclassify train`` (split, fit, card, save).

Balance strategies (``TrainConfig.balance``), applied to the training split only:

- ``none``: the data as it is.
- ``class-weights``: loss weights proportional to 1 / sqrt(class frequency), sample mean 1.
- ``oversample``: each epoch samples with probability proportional to 1 / class
  frequency (epoch size unchanged), so classes are drawn equally often.
- ``undersample``: each epoch draws every class down to the rarest class's count.
- ``synthetic``: minority classes are topped up with new samples until each has
  as many as the majority class (at most 5x its real count): for liposome class
  names (:data:`emclassify.synth.PROBLEMS`) new particles from the synthetic
  generator, otherwise strongly augmented copies (any-angle rotation, scale 0.8–1.2,
  flips, intensity, noise) of that class's real samples.
"""
from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics, ops
from .features import FEATURES_VERSION, N_FEATURES, FeatureCache, particle_features
from .inference import CancelToken, load_for_model, resolve_device
from .io import Dataset, Sample
from .models import create_model, fit_svm, input_kind, model_logits, parse_arch
from .preprocess import PreprocessConfig

from .defaults import BALANCE_STRATEGIES, TRAIN_DEFAULTS  # noqa: E402
SYNTHETIC_MAX_FACTOR = 5


@dataclass
class TrainConfig:
    """Training settings (recorded in the model card).

    lr: AdamW peak learning rate (one-cycle schedule over ``epochs``).
    weight_decay: AdamW decoupled weight decay. label_smoothing: cross-entropy smoothing.
    dropout: None = the architecture's own; else head dropout, with conv dropout half of it.
    patience: epochs without validation macro-F1 improvement before stopping.
    val_fraction: share of the training data held out for early stopping (group-aware).
    """

    # Defaults: emclassify.defaults.TRAIN_DEFAULTS (one source for the CLI, the GUI and the API).
    arch: str = TRAIN_DEFAULTS["arch"]
    epochs: int = TRAIN_DEFAULTS["epochs"]
    batch_size: int = TRAIN_DEFAULTS["batch_size"]
    lr: float = TRAIN_DEFAULTS["lr"]
    weight_decay: float = TRAIN_DEFAULTS["weight_decay"]
    label_smoothing: float = TRAIN_DEFAULTS["label_smoothing"]
    dropout: Optional[float] = TRAIN_DEFAULTS["dropout"]
    patience: int = TRAIN_DEFAULTS["patience"]
    val_fraction: float = TRAIN_DEFAULTS["val_fraction"]
    augment: bool = TRAIN_DEFAULTS["augment"]
    tta: bool = TRAIN_DEFAULTS["tta"]
    balance: str = TRAIN_DEFAULTS["balance"]
    seed: int = TRAIN_DEFAULTS["seed"]
    device: str = TRAIN_DEFAULTS["device"]

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_STRATEGIES:
            raise ValueError(f"unknown balance strategy {self.balance!r}; choose one of {', '.join(BALANCE_STRATEGIES)}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch size >= 2")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError("val_fraction must be in (0, 0.5)")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        parse_arch(self.arch)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochLog:
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_macro_f1: float
    val_accuracy: float
    seconds: float


@dataclass
class FitResult:
    model: nn.Module
    history: List[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "completed"  # completed | early-stopping | interrupted | cancelled
    info: Dict = field(default_factory=dict)


@dataclass
class InputSet:
    """Decoded, preprocessed particles.

    x: float32 ``N x 1 x S x S``; features: float64 ``N x F`` or None; labels: int64 ``N``
    (-1 when unlabelled); samples: the source samples, aligned; errors: "relpath: reason".
    """

    x: torch.Tensor
    features: Optional[np.ndarray]
    labels: torch.Tensor
    samples: List[Sample]
    errors: List[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx) -> "InputSet":
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        return InputSet(self.x[t], None if self.features is None else self.features[idx], self.labels[t],
                        [self.samples[i] for i in idx], [])


def load_inputs(samples: Sequence[Sample], cfg: PreprocessConfig, classes: Sequence[str],
                want_features: bool = False, workers: int = 4,
                progress: Optional[Callable[[int, int], None]] = None) -> InputSet:
    """Decode + preprocess ``samples`` once (and compute features if wanted, cached per image)."""
    index = {c: i for i, c in enumerate(classes)}
    cache = FeatureCache() if want_features else None
    xs, feats, labels, kept, errors = [], [], [], [], []
    chunk = 256  # bounded peak memory for the raw images
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(samples), chunk):
            part = samples[start : start + chunk]
            loaded = list(pool.map(lambda s: load_for_model(s, s.path.parent, cfg, want_features, cache), part))
            good = [(s, item) for s, item in zip(part, loaded) if item.result.ok]
            errors += [f"{s.relpath}: {item.result.error}" for s, item in zip(part, loaded) if not item.result.ok]
            if good:
                xs.append(ops.preprocess([g.image for _, g in good], [g.mask for _, g in good], cfg))
                if want_features:
                    feats.append(np.stack([g.features for _, g in good]))
                labels += [index[s.label] if s.label is not None else -1 for s, _ in good]
                kept += [s for s, _ in good]
            if progress is not None:
                progress(min(start + chunk, len(samples)), len(samples))
    x = torch.cat(xs) if xs else torch.zeros((0, 1, cfg.size, cfg.size))
    f = np.concatenate(feats) if feats else (np.zeros((0, N_FEATURES)) if want_features else None)
    return InputSet(x, f, torch.tensor(labels, dtype=torch.int64), kept, errors)


# --------------------------------------------------------------------------- augmentation


def _affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Rotate (radians) and scale each sample about its centre; outside pixels take ``fill``."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def augment(x: torch.Tensor, gen: torch.Generator, strong: bool = False) -> torch.Tensor:
    """Per-sample flips, 90° rotations, small rotation (±15°) and scale (0.9–1.1), intensity gain/offset, noise.

    ``strong``: any-angle rotation and scale 0.8–1.2 (used to make synthetic minority samples).
    x: float32 ``N x 1 x S x S`` (normalised, so background/padding is ~0).
    """
    n = x.shape[0]
    out = x.clone()
    k = torch.randint(0, 4, (n,), generator=gen)
    for r in (1, 2, 3):
        sel = k == r
        if sel.any():
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    max_angle = math.pi if strong else math.radians(15)
    spread = 0.2 if strong else 0.1
    angle = (2 * torch.rand(n, generator=gen) - 1) * max_angle
    scale = 1 + spread * (2 * torch.rand(n, generator=gen) - 1)
    out = _affine(out, angle, scale)
    gain = 1 + 0.1 * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    offset = 0.1 * torch.randn(n, 1, 1, 1, generator=gen)
    noise = 0.05 * torch.randn(out.shape, generator=gen)
    return out * gain + offset + noise


# --------------------------------------------------------------------------- class balance


# Loss weights follow 1 / sqrt(class frequency), not 1 / frequency: at the seed's lamellarity mix
# (87 / 12 / 0.6 %) full inverse-frequency weights are 145x apart, the 9 rare examples dominated the
# loss and the CNN called almost every particle by the rarest class (4-6 % accuracy, BENCHMARKS.md).
CLASS_WEIGHT_POWER = 0.5


def class_weights(y: torch.Tensor, n_classes: int, power: float = CLASS_WEIGHT_POWER) -> torch.Tensor:
    """Weights proportional to ``1 / frequency**power`` (absent classes weight 0), scaled so the
    average weight over the *samples* is 1 (the loss keeps its unweighted scale)."""
    counts = torch.bincount(y, minlength=n_classes).double()
    present = counts > 0
    w = torch.where(present, counts.clamp_min(1) ** -power, torch.zeros_like(counts))
    return (w * counts.sum() / (w * counts).sum()).float()


def epoch_indices(y: torch.Tensor, n_classes: int, balance: str, gen: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch under the balance strategy (see module doc)."""
    n = y.shape[0]
    if balance == "oversample":
        w = class_weights(y, n_classes, power=1.0)[y].double()  # every class drawn equally often
        return torch.multinomial(w, n, replacement=True, generator=gen)
    if balance == "undersample":
        counts = torch.bincount(y, minlength=n_classes)
        m = int(counts[counts > 0].min())
        parts = []
        for c in range(n_classes):
            idx = torch.nonzero(y == c).flatten()
            if idx.numel():
                parts.append(idx[torch.randperm(idx.numel(), generator=gen)[:m]])
        sel = torch.cat(parts)
        return sel[torch.randperm(sel.numel(), generator=gen)]
    return torch.randperm(n, generator=gen)


def synthetic_topup(data: InputSet, classes: Sequence[str], cfg: PreprocessConfig, seed: int,
                    want_features: bool) -> InputSet:
    """Add synthetic minority samples (see module doc); returns a new InputSet (training use only)."""
    from . import synth

    y = data.labels
    counts = torch.bincount(y, minlength=len(classes))
    target = int(counts.max())
    problem = next((p for p, (names, _) in synth.PROBLEMS.items() if set(classes) <= set(names)), None)
    gen = torch.Generator().manual_seed(seed + 7919)
    new_x, new_f, new_y = [], [], []
    for c, name in enumerate(classes):
        have = int(counts[c])
        need = min(target, SYNTHETIC_MAX_FACTOR * have) - have if have else 0
        if need <= 0:
            continue
        if problem is not None:
            rendered = [synth.render(problem, name, seed + 104729, 10_000_000 * (c + 1) + i) for i in range(need)]
            new_x.append(ops.preprocess([r[0] for r in rendered], [r[1] for r in rendered], cfg))
            if want_features:
                new_f.append(np.stack([particle_features(r[0], r[1]) for r in rendered]))
        else:
            idx = torch.nonzero(y == c).flatten()
            pick = idx[torch.randint(0, idx.numel(), (need,), generator=gen)]
            new_x.append(augment(data.x[pick], gen, strong=True))
            if want_features:
                new_f.append(data.features[pick.numpy()])
        new_y.append(torch.full((need,), c, dtype=torch.int64))
    if not new_y:
        return data
    feats = np.concatenate([data.features] + new_f) if want_features else None
    return InputSet(torch.cat([data.x] + new_x), feats, torch.cat([y] + new_y), data.samples, data.errors)


# --------------------------------------------------------------------------- fitting


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, features: Optional[np.ndarray] = None,
                   device: Optional[torch.device] = None, batch_size: int = 256, tta: bool = False) -> torch.Tensor:
    """Logits ``N x C`` of any model kind, in batches (``tta``: see :func:`model_logits`)."""
    model.eval()
    kind = input_kind(model)
    device = device or torch.device("cpu")
    if kind == "features":
        return model(torch.as_tensor(features)).float()
    outs = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device)
        fb = None if kind == "image" else torch.as_tensor(features[i : i + batch_size]).to(device)
        outs.append(model_logits(model, xb, fb, tta).float().cpu())
    return torch.cat(outs) if outs else torch.zeros((0, getattr(model, "num_classes", 0)))


PRECISE_BN_SAMPLES = 1024


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, train: InputSet, device: torch.device, gen: torch.Generator,
                          n: int = PRECISE_BN_SAMPLES, batch_size: int = 128) -> None:
    """Re-estimate batch-norm statistics on clean (un-augmented) training images, dropout off.

    Why: the running statistics gathered during training mix augmented inputs and
    dropout noise (dropout before batch-norm shifts the variance seen at inference),
    which made validation scores jump from epoch to epoch and early stopping pick
    epochs by luck. Measured on NanoShapes (BENCHMARKS.md): validation macro-F1 per
    epoch becomes smooth, test accuracy unchanged, ~15 % more time per epoch.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    idx = torch.randperm(train.labels.shape[0], generator=gen)[:n]
    fused = input_kind(model) == "image+features"
    for start in range(0, idx.numel(), batch_size):
        b = idx[start : start + batch_size]
        if b.numel() < 2:
            continue
        xb = train.x[b].to(device)
        model(xb, torch.as_tensor(train.features[b.numpy()]).to(device)) if fused else model(xb)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()


def fit(train: InputSet, val: InputSet, n_classes: int, cfg: TrainConfig,
        on_epoch: Optional[Callable[[EpochLog], None]] = None,
        cancel: Optional[CancelToken] = None) -> FitResult:
    """Train ``cfg.arch`` (a LipNet or fusion) on preprocessed inputs; keep the epoch with the best
    validation macro-F1. Ctrl-C or ``cancel`` stop after the current epoch, keeping the best so far.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    size = train.x.shape[-1]
    _, fused = parse_arch(cfg.arch)
    model = create_model(cfg.arch, n_classes, size, n_features=N_FEATURES if fused else 0, dropout=cfg.dropout)
    if fused:
        model.set_feature_stats(torch.as_tensor(train.features))
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_train = train.labels.shape[0]
    steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    weight = class_weights(train.labels, n_classes).to(device) if cfg.balance == "class-weights" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    val_loss_fn = nn.CrossEntropyLoss()
    feats = torch.as_tensor(train.features) if fused else None
    order_balance = cfg.balance if cfg.balance in ("oversample", "undersample") else "none"

    result = FitResult(model=model)
    best_f1, best_state, since_best = -1.0, None, 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = epoch_indices(train.labels, n_classes, order_balance, gen)
            total, count = 0.0, 0
            for start in range(0, order.numel(), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if idx.numel() < 2:  # batch-norm needs more than one sample
                    continue
                xb = train.x[idx]
                if cfg.augment:
                    xb = augment(xb, gen)
                xb, yb = xb.to(device), train.labels[idx].to(device)
                logits = model(xb, feats[idx].to(device)) if fused else model(xb)
                loss = loss_fn(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched.last_epoch + 1 < sched.total_steps:
                    sched.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            recalibrate_batchnorm(model, train, device, gen)
            logits = predict_logits(model, val.x, val.features, device)
            pred = logits.argmax(1) if logits.numel() else torch.zeros(0, dtype=torch.long)
            summ = metrics.summary(metrics.confusion_matrix(val.labels, pred, n_classes),
                                   [str(i) for i in range(n_classes)])
            val_loss = float(val_loss_fn(logits, val.labels)) if logits.numel() else float("nan")
            log = EpochLog(epoch, cfg.epochs, total / max(count, 1), val_loss, summ["macro_f1"], summ["accuracy"],
                           time.perf_counter() - t0)
            result.history.append(log)
            if on_epoch is not None:
                on_epoch(log)
            if summ["macro_f1"] > best_f1 + 1e-9:
                best_f1, since_best = summ["macro_f1"], 0
                best_state = copy.deepcopy(model.state_dict())
                result.best_epoch = epoch
            else:
                since_best += 1
            if cancel is not None and cancel.cancelled:
                result.stopped = "cancelled"
                break
            if since_best >= cfg.patience:
                result.stopped = "early-stopping"
                break
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval().cpu()
    return result


def fit_model(train_set: InputSet, val_set: InputSet, classes: Sequence[str], pcfg: PreprocessConfig,
              cfg: TrainConfig, on_epoch=None, cancel=None) -> FitResult:
    """Fit any architecture: balance strategy, then the SVM or the network."""
    n_classes = len(classes)
    _, uses_features = parse_arch(cfg.arch)
    if cfg.balance == "synthetic":
        train_set = synthetic_topup(train_set, classes, pcfg, cfg.seed, uses_features)
    if cfg.arch == "svm":
        model, info = fit_svm(train_set.features, train_set.labels.numpy(), n_classes, seed=cfg.seed)
        return FitResult(model=model, best_epoch=0, stopped="completed", info=asdict(info))
    return fit(train_set, val_set, n_classes, cfg, on_epoch=on_epoch, cancel=cancel)


# --------------------------------------------------------------------------- splits


def holdout_split(labels: np.ndarray, groups: Optional[Sequence], fraction: float, seed: int):
    """Stratified (and group-aware when groups are given) train/validation index split."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    n_splits = max(2, int(round(1 / fraction)))
    min_count = int(np.bincount(labels).min()) if len(labels) else 0
    n_groups = len(set(groups)) if groups is not None and all(g is not None for g in groups) else 0
    if n_groups >= 2:
        # Few groups: a larger validation share, but never a group on both sides.
        splitter = StratifiedGroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed)
        train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels, np.asarray(groups)))
    elif min_count >= 2:
        splitter = StratifiedKFold(n_splits=min(n_splits, min_count), shuffle=True, random_state=seed)
        train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels))
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(labels))
        cut = max(1, int(round(fraction * len(labels))))
        val_idx, train_idx = np.sort(perm[:cut]), np.sort(perm[cut:])
    return np.sort(train_idx), np.sort(val_idx)


# --------------------------------------------------------------------------- emclassify train


@dataclass
class TrainOutcome:
    path: object
    card: object
    fit: FitResult
    validation: Dict
    skipped: List[str]
    flags: List[Dict[str, str]] = field(default_factory=list)


def train(dataset: Dataset, pcfg: PreprocessConfig, cfg: TrainConfig, out, on_epoch=None, cancel=None,
          on_load=None, name: str = "", problem: str = "", input_decision: Optional[Dict] = None) -> TrainOutcome:
    """``emclassify train``: load once, hold out a validation split, fit and assess
    (:func:`emclassify.assess.fit_assessed`: baselines, ``auto`` choice, calibration, flags), write the
    model file. input_decision: how the input mode was chosen (recorded in the card)."""
    from ._version import __version__
    from .assess import fit_assessed  # assess builds on this module's fitting
    from .input_decision import image_side_stats
    from .modelfile import ModelCard, save_model

    data = load_inputs(dataset.samples, pcfg, dataset.classes, want_features=True, progress=on_load)
    refuse_too_small(data)
    if len(data) < 4:
        unread = "".join(f"\n  {e}" for e in data.errors[:10]) + (
            f"\n  ... and {len(data.errors) - 10} more" if len(data.errors) > 10 else "")
        raise ValueError(f"only {len(data)} usable images: too few to train on"
                         + (f"; {len(data.errors)} could not be used:{unread}" if data.errors else ""))
    groups = [s.group for s in data.samples] if dataset.has_groups else None
    tr, va = holdout_split(data.labels.numpy(), groups, cfg.val_fraction, cfg.seed)
    val_set = data.subset(va)
    res = fit_assessed(data.subset(tr), val_set, dataset.classes, pcfg, cfg, on_epoch, cancel)
    _, uses_features = parse_arch(res.arch)
    validation = {**res.scores["model"], "n": int(len(va))}
    card = ModelCard(
        classes=list(dataset.classes),
        arch=res.arch,
        preprocess=pcfg,
        name=name or f"{res.arch} on {dataset.root.name}",
        problem=problem,
        training={**cfg.to_dict(), "arch": res.arch, "arch_requested": cfg.arch, "best_epoch": res.fit.best_epoch,
                  "epochs_run": len(res.fit.history), "stopped": res.fit.stopped,
                  **({"svm": res.fit.info} if res.fit.info else {}),
                  "history": [asdict(h) for h in res.fit.history],
                  **({"input_decision": input_decision} if input_decision else {})},
        metrics=res.card_metrics(int(len(va))),
        data={"root": str(dataset.root), "source": dataset.source, "fingerprint": dataset.fingerprint(),
              "n_images": len(dataset), "n_used": len(data), "n_skipped": len(data.errors),
              "class_counts": dataset.class_counts(), "class_order": dataset.class_order,
              "n_train": int(len(tr)), "n_validation": int(len(va)),
              "groups": len(set(groups)) if groups else 0, "group_aware_split": groups is not None,
              "image_sides_px": image_side_stats(dataset.samples), "emclassify": __version__},
        features={"version": FEATURES_VERSION, "n": N_FEATURES} if uses_features else {},
    )
    path = save_model(out, res.model, card)
    return TrainOutcome(path, card, res.fit, validation, data.errors, res.flags)


class TooSmallError(ValueError):
    """Images whose region is under the documented minimum; the message names them."""


def refuse_too_small(data: "InputSet") -> None:
    """Raise :class:`TooSmallError` naming the images whose region is too small to classify.

    Why an error, not a skip: with a default that does not fit the data (e.g. a margin crop of
    41 px images) every image would be skipped or, before this check, shrunk to one pixel.
    """
    small = [e.split(": ", 1) for e in data.errors if "too small to classify" in e]
    if small:
        reason = small[0][1]
        names = [p for p, _ in small]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise TooSmallError(f"{len(small)} image(s) are too small to classify with these input settings "
                            f"(e.g. {reason}): {shown}")
