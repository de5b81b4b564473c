"""One split, assessed: fit, score beside the baselines, choose (``auto``), calibrate, flag.

:func:`fit_assessed` is what ``emclassify train`` does on its validation split and
what ``emclassify cv`` does inside every fold (on the fold's inner validation
split), so a model file and a cross-validation report say the same things:

1. fit the requested architecture on the training part (``auto``: the
   CNN+features fusion averaged with the SVM, :data:`emclassify.models.AUTO_CANDIDATES`);
2. score it, the majority-class baseline and the SVM on handcrafted features
   (fitted on the same training part) on the validation part;
3. ``auto`` keeps whichever of the ensemble, its network alone and the SVM alone
   has the higher validation macro-F1 (in that order on a tie) and records all
   scores (an ensemble's SVM is the baseline SVM: one fit serves both);
4. fit a temperature on the kept model's validation logits
   (:mod:`emclassify.calibration`);
5. :func:`emclassify.guardrails.flags` on the validation scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import guardrails, metrics
from .calibration import calibrate
from .models import AUTO, AUTO_CANDIDATES, SVM, NetSVMEnsemble, ensemble_member, fit_svm
from .preprocess import PreprocessConfig
from .training import FitResult, InputSet, TrainConfig, fit_model, predict_logits


@dataclass
class Assessed:
    """The kept model of one split and everything measured about it.

    arch: the kept architecture (``auto`` resolved). temperature: divide logits by it.
    scores: ``{"model"|"majority"|"svm": metrics.summary}`` on the validation part.
    svm_model: the SVM baseline (None when features are unavailable).
    """

    model: nn.Module
    arch: str
    fit: FitResult
    temperature: float
    calibration: Dict
    scores: Dict[str, Dict]
    flags: List[Dict[str, str]]
    selection: Optional[Dict] = None
    svm_model: Optional[nn.Module] = None
    majority_class: int = 0

    def card_metrics(self, n_validation: int) -> Dict:
        """The model card's ``metrics`` entry."""
        out = {"validation": {**self.scores["model"], "n": n_validation},
               "baselines": {k: _compact(v) for k, v in self.scores.items() if k != "model"},
               "calibration": self.calibration, "flags": self.flags}
        if self.selection:
            out["selection"] = self.selection
        return out


def _compact(m: Dict) -> Dict:
    return {k: m[k] for k in ("accuracy", "balanced_accuracy", "macro_f1") if k in m} | (
        {"predicts": m["predicts"]} if "predicts" in m else {})


def _score(model: nn.Module, data: InputSet, classes: Sequence[str], tta: bool = False):
    logits = predict_logits(model, data.x, data.features, tta=tta)
    pred = logits.argmax(1) if logits.numel() else torch.zeros(0, dtype=torch.long)
    return logits, metrics.score(data.labels, pred, classes)


def fit_svm_baseline(train: InputSet, n_classes: int, seed: int) -> Optional[nn.Module]:
    """The SVM baseline on (a bounded stratified subsample of) the training part, or None."""
    if train.features is None or len(torch.unique(train.labels)) < 2:
        return None
    idx = guardrails.subsample_for_svm(train.labels.numpy(), seed)
    model, _ = fit_svm(train.features[idx], train.labels.numpy()[idx], n_classes, seed=seed)
    return model


def fit_assessed(train: InputSet, val: InputSet, classes: Sequence[str], pcfg: PreprocessConfig, cfg: TrainConfig,
                 on_epoch=None, cancel=None, where: str = "validation") -> Assessed:
    """Fit ``cfg.arch`` on ``train`` and assess it on ``val`` (see module doc)."""
    k = len(classes)
    cfg = cfg.resolved(len(train), pcfg.size)  # callers that report the epochs resolve first; idempotent
    requested = cfg.arch
    arch = AUTO_CANDIDATES[0] if requested == AUTO else requested
    run_cfg = TrainConfig(**{**cfg.to_dict(), "arch": arch})
    fit = fit_model(train, val, classes, pcfg, run_cfg, on_epoch=on_epoch, cancel=cancel)
    model = fit.model
    logits, score = _score(model, val, classes, cfg.tta)
    if arch == SVM:
        svm = fit.model
    elif isinstance(fit.model, NetSVMEnsemble):
        svm = fit.model.svm
    else:
        svm = fit_svm_baseline(train, k, cfg.seed)
    scores = {"model": score, "majority": guardrails.majority_scores(train.labels.numpy(), val.labels.numpy(), classes)}
    svm_logits = None
    if svm is not None:
        svm_logits, scores["svm"] = _score(svm, val, classes)
    selection = None
    if requested == AUTO and svm is not None and arch != SVM:
        # Candidates in order of preference on a tie: the ensemble, its network alone (wins where the
        # SVM is weak, e.g. features from automatic segmentation), the SVM alone (wins on small data).
        options = {arch: (model, logits, score, fit)}
        if isinstance(fit.model, NetSVMEnsemble):
            net = fit.model.net
            net_logits, net_score = _score(net, val, classes, cfg.tta)
            options[ensemble_member(arch)] = (net, net_logits, net_score,
                                              FitResult(model=net, history=fit.history, best_epoch=fit.best_epoch,
                                                        stopped=fit.stopped))
        options[SVM] = (svm, svm_logits, scores["svm"],
                        FitResult(model=svm, stopped="completed", info={"selected_over": arch}))
        best = max(options[a][2]["macro_f1"] for a in options)
        kept = next(a for a in options if options[a][2]["macro_f1"] >= best - 1e-9)
        selection = {"rule": f"higher macro-F1 on the {where} split (on a tie: ensemble, then network, then SVM)",
                     "candidates": {a: o[2]["macro_f1"] for a, o in options.items()}, "kept": kept}
        if kept != arch:
            model, logits, scores["model"], fit = options[kept]
            arch = kept
    temperature, calib = calibrate(logits, val.labels) if len(val) else (1.0, {})
    train_counts = dict(zip(classes, torch.bincount(train.labels, minlength=k).tolist()))
    val_counts = dict(zip(classes, torch.bincount(val.labels, minlength=k).tolist()))
    flag_list = guardrails.flags(
        scores["model"], majority=scores["majority"], svm=scores.get("svm") if arch != SVM else None,
        train_counts=train_counts, eval_counts=val_counts, best_epoch=fit.best_epoch, epochs_run=len(fit.history),
        max_epochs=cfg.epochs, stopped=fit.stopped, where=where)
    return Assessed(model=model, arch=arch, fit=fit, temperature=temperature, calibration=calib, scores=scores,
                    flags=flag_list, selection=selection, svm_model=svm,
                    majority_class=int(np.bincount(train.labels.numpy(), minlength=k).argmax()))


__all__ = ["Assessed", "fit_assessed", "fit_svm_baseline"]
