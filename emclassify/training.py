"""Training a LipNet: images decoded and preprocessed once, then epochs on tensors.

:func:`load_inputs` turns dataset samples into a float32 ``N x 1 x S x S``
tensor (bad files are skipped with their reason); :func:`fit` trains with
augmentation, class-imbalance handling, weight decay, label smoothing, dropout
and early stopping on a validation split, restoring the best epoch.
"""
from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from . import metrics, ops
from .inference import CancelToken, load_for_model, resolve_device
from .io import Sample
from .models import create_model
from .preprocess import PreprocessConfig

BALANCE_STRATEGIES = ("none", "class-weights", "oversample", "undersample")


@dataclass
class TrainConfig:
    """Training settings (recorded in the model card).

    lr: AdamW learning rate (cosine-decayed over ``epochs``). weight_decay: AdamW.
    patience: epochs without validation macro-F1 improvement before stopping.
    balance: ``none`` | ``class-weights`` (loss weights ∝ 1/frequency) |
    ``oversample`` (sampling ∝ 1/frequency, epoch size unchanged) | ``undersample``
    (each epoch draws every class down to the rarest class's count).
    """

    arch: str = "lipnet4"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    patience: int = 8
    augment: bool = True
    balance: str = "class-weights"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_STRATEGIES:
            raise ValueError(f"unknown balance strategy {self.balance!r}; choose one of {', '.join(BALANCE_STRATEGIES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochLog:
    epoch: int
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
    validation: dict = field(default_factory=dict)  # metrics.summary of the best epoch
    stopped: str = "completed"  # completed | early-stopping | interrupted | cancelled


def load_inputs(
    samples: Sequence[Sample], cfg: PreprocessConfig, workers: int = 4
) -> Tuple[torch.Tensor, List[int], List[str]]:
    """Decode + preprocess ``samples`` once.

    Returns ``(x, kept, errors)``: x float32 ``M x 1 x S x S`` for the ``kept``
    sample indices; ``errors`` holds "relpath: reason" for skipped files.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        loaded = list(pool.map(lambda s: load_for_model(s, s.path.parent, cfg.mode, cfg.margin), samples))
    kept = [i for i, item in enumerate(loaded) if item.result.ok]
    errors = [f"{samples[i].relpath}: {item.result.error}" for i, item in enumerate(loaded) if not item.result.ok]
    chunks = []
    for start in range(0, len(kept), 512):  # bounded peak memory for the raw images
        idx = kept[start : start + 512]
        chunks.append(ops.preprocess([loaded[i].image for i in idx], [loaded[i].mask for i in idx], cfg))
        for i in idx:
            loaded[i].image = loaded[i].mask = None
    x = torch.cat(chunks) if chunks else torch.zeros((0, 1, cfg.size, cfg.size))
    return x, kept, errors


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips, 90° rotations, intensity gain/offset and noise, per sample. x: N x 1 x S x S."""
    n = x.shape[0]
    out = x.clone()
    k = torch.randint(0, 4, (n,), generator=gen)
    for r in (1, 2, 3):
        sel = k == r
        if sel.any():
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    gain = 1 + 0.1 * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    offset = 0.1 * torch.randn(n, 1, 1, 1, generator=gen)
    noise = 0.05 * torch.randn(out.shape, generator=gen)
    return out * gain + offset + noise


def class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over present classes (absent classes weight 0)."""
    counts = torch.bincount(y, minlength=n_classes).double()
    w = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    present = counts > 0
    return (w / w[present].mean()).float()


def epoch_indices(y: torch.Tensor, n_classes: int, balance: str, gen: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch under the balance strategy."""
    n = y.shape[0]
    if balance == "oversample":
        w = class_weights(y, n_classes)[y].double()
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


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    outs = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.zeros((0, 0))


def fit(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    n_classes: int,
    cfg: TrainConfig,
    on_epoch: Optional[Callable[[EpochLog], None]] = None,
    cancel: Optional[CancelToken] = None,
) -> FitResult:
    """Train ``cfg.arch`` on preprocessed tensors; select the epoch with the best validation macro-F1.

    x_*: float32 ``N x 1 x S x S``; y_*: int64 class indices. Ctrl-C or ``cancel``
    stop after the current epoch, keeping the best model so far.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    size = x_train.shape[-1]
    model = create_model(cfg.arch, n_classes, size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(x_train.shape[0] / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    weight = class_weights(y_train, n_classes).to(device) if cfg.balance == "class-weights" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    val_loss_fn = nn.CrossEntropyLoss()

    result = FitResult(model=model)
    best_f1, best_state, since_best = -1.0, None, 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = epoch_indices(y_train, n_classes, cfg.balance, gen)
            total, count = 0.0, 0
            for start in range(0, order.numel(), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if idx.numel() < 2:  # batch-norm needs >1 sample
                    continue
                xb = x_train[idx]
                if cfg.augment:
                    xb = augment(xb, gen)
                xb, yb = xb.to(device), y_train[idx].to(device)
                loss = loss_fn(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched.last_epoch + 1 < sched.total_steps:
                    sched.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            logits = predict_logits(model, x_val, device)
            pred = logits.argmax(1) if logits.numel() else torch.zeros(0, dtype=torch.long)
            summ = metrics.summary(metrics.confusion_matrix(y_val, pred, n_classes), [str(i) for i in range(n_classes)])
            val_loss = float(val_loss_fn(logits, y_val)) if logits.numel() else float("nan")
            log = EpochLog(epoch, total / max(count, 1), val_loss, summ["macro_f1"], summ["accuracy"], time.perf_counter() - t0)
            result.history.append(log)
            if on_epoch is not None:
                on_epoch(log)
            if summ["macro_f1"] > best_f1 + 1e-9:
                best_f1, since_best = summ["macro_f1"], 0
                best_state = copy.deepcopy(model.state_dict())
                result.best_epoch, result.validation = epoch, summ
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
