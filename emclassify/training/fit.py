"""The fit loop: a network (or ensemble, or SVM) on an :class:`InputSet` split, with early stopping
on validation macro-F1, batch-norm recalibration and channels-last steps."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .. import metrics
from ..features import N_FEATURES
from ..runtime import (CancelToken, autocast_steps, fused_optimizer_supported, resolve_device, reuse_freed_memory,
                       training_autocast_dtype)
from ..models import (create_model, ensemble_member, fit_svm, forward, input_kind, model_logits, parse_arch,
                      view_logits)
from ..preprocess import PreprocessConfig
from .augment import augment
from .balance import class_weights, epoch_indices, epoch_plan, synthetic_topup
from .config import EpochLog, FitResult, TrainConfig
from .inputs import InputSet
from .stopping import EpochSelector


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, features: Optional[np.ndarray] = None,
                   device: Optional[torch.device] = None, batch_size: int = 256, tta: bool = False,
                   autocast: Optional[torch.dtype] = None) -> torch.Tensor:
    """Logits float32 ``N x C`` of any model kind, in batches (``tta``: see :func:`model_logits`).

    autocast: run the network in this autocast dtype (the training steps' bf16, for the validation of
    each epoch) through its PyTorch layers instead of the float32 native trunk.
    """
    def run(xb, fb):
        with autocast_steps(device or torch.device("cpu"), autocast):
            return model_logits(model, xb, fb, tta)

    return _batched(run, model, x, features, device, batch_size, 0)


@torch.inference_mode()
def predict_views(model: nn.Module, x: torch.Tensor, features: Optional[np.ndarray] = None,
                  device: Optional[torch.device] = None, batch_size: int = 256) -> torch.Tensor:
    """Logits of every D4 view, float32 ``V x N x C`` (:func:`~emclassify.models.view_logits`):
    ``.mean(0)`` is the test-time-augmented prediction and ``[0]`` the plain one, from one pass."""
    return _batched(lambda xb, fb: view_logits(model, xb, fb), model, x, features, device, batch_size, 1)


def _batched(run, model: nn.Module, x, features, device, batch_size: int, dim: int) -> torch.Tensor:
    """``run(x batch, features batch)`` over ``x`` in batches, concatenated along ``dim``."""
    model.eval()
    kind = input_kind(model)
    device = device or torch.device("cpu")
    if kind == "features":
        return run(None, torch.as_tensor(features)).float()
    outs = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device)
        fb = None if kind == "image" else torch.as_tensor(features[i : i + batch_size]).to(device)
        outs.append(run(xb, fb).float().cpu())
    if outs:
        return torch.cat(outs, dim)
    empty = torch.zeros((0, getattr(model, "num_classes", 0)))
    return empty if dim == 0 else empty[None]


# 512 clean images estimate the statistics as well as 1,024 did (validation macro-F1 per epoch within
# noise, BENCHMARKS.md "Training throughput") at half the cost, ~7 % of an epoch on NanoShapes.
PRECISE_BN_SAMPLES = 512
# Training runs the trunk channels-last: oneDNN's convolutions and their backward skip the layout
# reorders they do for NCHW tensors (BENCHMARKS.md "Training throughput": ~1.25x per step on 2 cores).
TRAIN_MEMORY_FORMAT = torch.channels_last


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, train: InputSet, device: torch.device, gen: torch.Generator,
                          n: int = PRECISE_BN_SAMPLES, batch_size: int = 128,
                          memory_format: torch.memory_format = torch.contiguous_format,
                          autocast: Optional[torch.dtype] = None) -> None:
    """Re-estimate batch-norm statistics on clean (un-augmented) training images, dropout off.

    Why: the running statistics gathered during training mix augmented inputs and
    dropout noise (dropout before batch-norm shifts the variance seen at inference),
    which made validation scores jump from epoch to epoch and early stopping pick
    epochs by luck. Measured on NanoShapes (BENCHMARKS.md): validation macro-F1 per
    epoch becomes smooth, test accuracy unchanged, ~15 % more time per epoch.

    autocast: the training steps' autocast dtype (:func:`~emclassify.runtime.training_autocast_dtype`);
    the statistics are then gathered from the activations the steps compute, in float32 sums, at
    about half the float32 cost. The 14,000-particle CV scored the same with bf16 and float32
    recalibration, fold by fold within 0.001 (BENCHMARKS.md "Fifth round").
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
    for start in range(0, idx.numel(), batch_size):
        b = idx[start : start + batch_size]
        if b.numel() < 2:
            continue
        xb = train.x[b].to(device).contiguous(memory_format=memory_format)
        with autocast_steps(device, autocast):
            forward(model, xb, None if train.features is None else torch.as_tensor(train.features[b.numpy()]).to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()


def fit(train: InputSet, val: InputSet, n_classes: int, cfg: TrainConfig,
        on_epoch: Optional[Callable[[EpochLog], None]] = None,
        cancel: Optional[CancelToken] = None, memory_format: torch.memory_format = TRAIN_MEMORY_FORMAT,
        bn_samples: int = PRECISE_BN_SAMPLES, autocast_recalibration: bool = True,
        autocast_validation: bool = True, fused_optimizer: bool = True) -> FitResult:
    """Train ``cfg.arch`` (a LipNet or fusion) on preprocessed inputs; keep the epoch with the best
    validation macro-F1 averaged with its neighbours' (:class:`~.stopping.EpochSelector`). Ctrl-C or
    ``cancel`` stop after the current epoch, keeping the best so far.

    memory_format / bn_samples / autocast_recalibration (recalibrate batch-norm in the steps' autocast) /
    autocast_validation (validate each epoch in it) / fused_optimizer (AdamW's fused kernel where
    :func:`fused_optimizer_supported`): speed settings (the benchmark harness compares them side by side);
    the returned model is contiguous whatever the training layout.
    """
    cfg = cfg.resolved(len(train), train.x.shape[-1])
    reuse_freed_memory()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    autocast = training_autocast_dtype(cfg.precision, device)
    size = train.x.shape[-1]
    _, fused = parse_arch(cfg.arch)
    model = create_model(cfg.arch, n_classes, size, n_features=N_FEATURES if fused else 0, dropout=cfg.dropout)
    if fused:
        model.set_feature_stats(torch.as_tensor(train.features))
    model = model.to(device=device, memory_format=memory_format)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=fused_optimizer and fused_optimizer_supported(device))
    order_balance = cfg.balance if cfg.balance in ("oversample", "undersample") else "none"
    plan = epoch_plan(train.labels, n_classes, order_balance, cfg.majority_ratio, cfg.min_epoch_size(size))
    # the schedule spans the steps the epochs really take (an undersampled or capped epoch is shorter)
    steps_per_epoch = max(1, math.ceil(plan.size / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    weight = class_weights(train.labels, n_classes) if cfg.balance == "class-weights" else None
    if plan.capped is not None:
        weight = plan.loss_factor * (weight if weight is not None else 1.0)
    loss_fn = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device),
                                  label_smoothing=cfg.label_smoothing)
    val_loss_fn = nn.CrossEntropyLoss()
    feats = torch.as_tensor(train.features) if fused else None

    result = FitResult(model=model, epoch_plan=plan, precision="float32" if autocast is None else "bfloat16")
    selector = EpochSelector(cfg.patience)
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = epoch_indices(train.labels, n_classes, order_balance, gen, plan)
            total, count = 0.0, 0
            for start in range(0, order.numel(), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if idx.numel() < 2:  # batch-norm needs more than one sample
                    continue
                xb = train.x[idx]
                if cfg.augment:
                    xb = augment(xb, gen)
                xb, yb = xb.to(device).contiguous(memory_format=memory_format), train.labels[idx].to(device)
                with autocast_steps(device, autocast):
                    logits = forward(model, xb, None if feats is None else feats[idx].to(device))
                loss = loss_fn(logits.float(), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched.last_epoch + 1 < sched.total_steps:
                    sched.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            recalibrate_batchnorm(model, train, device, gen, n=bn_samples, memory_format=memory_format,
                                  autocast=autocast if autocast_recalibration else None)
            # validated in the steps' precision: bf16 halves its cost (~0.28 -> 0.17 s of a ~3.9 s NanoShapes
            # epoch, BENCHMARKS.md "Seventh round"); the kept model predicts in float32 afterwards
            logits = predict_logits(model, val.x, val.features, device,
                                    autocast=autocast if autocast_validation else None)
            pred = logits.argmax(1) if logits.numel() else torch.zeros(0, dtype=torch.long)
            summ = metrics.summary(metrics.confusion_matrix(val.labels, pred, n_classes),
                                   [str(i) for i in range(n_classes)])
            val_loss = float(val_loss_fn(logits, val.labels)) if logits.numel() else float("nan")
            log = EpochLog(epoch, cfg.epochs, total / max(count, 1), val_loss, summ["macro_f1"], summ["accuracy"],
                           time.perf_counter() - t0, lr=float(opt.param_groups[0]["lr"]))
            result.history.append(log)
            if on_epoch is not None:
                on_epoch(log)
            selector.add(summ["macro_f1"], copy.deepcopy(model.state_dict()))
            if cancel is not None and cancel.cancelled:
                result.stopped = "cancelled"
                break
            if selector.should_stop():
                result.stopped = "early-stopping"
                break
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    best_state = selector.finish()
    result.best_epoch = selector.best_epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format).eval().cpu()
    return result


def fit_model(train_set: InputSet, val_set: InputSet, classes: Sequence[str], pcfg: PreprocessConfig,
              cfg: TrainConfig, on_epoch=None, cancel=None, fitted_svm=None) -> FitResult:
    """Fit any architecture: balance strategy, then the SVM or the network.

    fitted_svm: ``(SVM, fit info dict)`` already fitted on ``train_set`` as :func:`fit_ensemble`
    would fit it, so an ensemble does not fit it twice; ignored otherwise and with synthetic top-up.
    """
    n_classes = len(classes)
    cfg = cfg.resolved(len(train_set), pcfg.size)  # "auto" epochs from the set before any top-up
    _, uses_features = parse_arch(cfg.arch)
    if cfg.balance == "synthetic":
        train_set = synthetic_topup(train_set, classes, pcfg, cfg.seed, uses_features)
        fitted_svm = None  # fitted on the set before the top-up
    if cfg.arch == "svm":
        model, info = fit_svm(train_set.features, train_set.labels.numpy(), n_classes, seed=cfg.seed)
        return FitResult(model=model, best_epoch=0, stopped="completed", info=asdict(info))
    member = ensemble_member(cfg.arch)
    if member is not None:
        return fit_ensemble(train_set, val_set, n_classes, TrainConfig(**{**cfg.to_dict(), "arch": member}),
                            on_epoch=on_epoch, cancel=cancel, fitted_svm=fitted_svm)
    return fit(train_set, val_set, n_classes, cfg, on_epoch=on_epoch, cancel=cancel)


def fit_subsampled_svm(train_set: InputSet, n_classes: int, seed: int):
    """``(SVM, fit info dict)``: the SVM on a bounded stratified subsample of ``train_set``
    (:func:`emclassify.guardrails.subsample_for_svm`), as ensembles and the SVM baseline fit it."""
    from ..guardrails import subsample_for_svm

    labels = train_set.labels.numpy()
    idx = subsample_for_svm(labels, seed)
    svm, info = fit_svm(train_set.features[idx], labels[idx], n_classes, seed=seed)
    return svm, asdict(info)


def fit_ensemble(train_set: InputSet, val_set: InputSet, n_classes: int, net_cfg: TrainConfig, on_epoch=None,
                 cancel=None, fitted_svm=None) -> FitResult:
    """``<network>+svm``: the network (``net_cfg.arch``) and the SVM fitted on the same training part
    (the SVM on a bounded stratified subsample, :func:`emclassify.guardrails.subsample_for_svm`;
    ``fitted_svm``: that SVM and its fit info, already fitted), the network's temperature fitted on the validation part,
    then averaged (:class:`emclassify.models.NetSVMEnsemble`)."""
    from ..calibration import calibrate
    from ..models import NetSVMEnsemble

    net = fit(train_set, val_set, n_classes, net_cfg, on_epoch=on_epoch, cancel=cancel)
    svm, info = fitted_svm or fit_subsampled_svm(train_set, n_classes, net_cfg.seed)
    temperature, views = 1.0, None
    if len(val_set):
        # test-time augmented like every later prediction; the views are kept so that scoring the
        # ensemble and its network on the validation part does not run the network again
        views = predict_views(net.model, val_set.x, val_set.features) if net_cfg.tta else None
        logits = views.mean(0) if views is not None else predict_logits(net.model, val_set.x, val_set.features)
        temperature, _ = calibrate(logits, val_set.labels)
    model = NetSVMEnsemble(net.model, svm, temperature).eval()
    return FitResult(model=model, history=net.history, best_epoch=net.best_epoch, stopped=net.stopped,
                     info={**info, "net_temperature": temperature}, epoch_plan=net.epoch_plan, precision=net.precision,
                     net_val_views=views,
                     net_val_x=val_set.x if views is not None else None)
