"""One split, assessed: fit, score beside the baselines, choose (``auto``), calibrate, flag.

:func:`fit_assessed` is what ``emclassify train`` does on its validation split and
what ``emclassify cv`` does inside every fold (on the fold's inner validation
split), so a model file and a cross-validation report say the same things:

1. fit the requested architecture on the training part. ``auto`` fits the SVM on handcrafted
   features first and scores it on the validation part: where it gets at least
   :data:`~emclassify.defaults.AUTO_FEATURES_INFORMATIVE` of the way from chance to perfect
   balanced accuracy, the features are informative and the network is the CNN+features fusion
   (:data:`emclassify.models.AUTO_CANDIDATES`); below, the CNN on the image alone
   (:data:`~emclassify.models.AUTO_CANDIDATES_IMAGE_ONLY`: a linear head that fits weak features
   does so at the image's expense). The network is averaged with that same SVM;
2. score it, the majority-class baseline and the SVM on handcrafted features
   (fitted on the same training part) on the validation part;
3. ``auto`` keeps whichever of the ensemble, its network alone and the SVM alone
   has the higher validation macro-F1 (in that order on a tie) and records all
   scores and the features' measurement (an ensemble's SVM is the baseline SVM: one fit serves all);
4. fit a temperature on the kept model's validation logits
   (:mod:`emclassify.calibration`);
5. :func:`emclassify.guardrails.flags` on the validation scores.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from . import guardrails, metrics
from .calibration import calibrate
from .defaults import AUTO_FEATURES_INFORMATIVE
from .models import AUTO, AUTO_CANDIDATES, AUTO_CANDIDATES_IMAGE_ONLY, SVM, NetSVMEnsemble, ensemble_member
from .preprocess import PreprocessConfig
from .training import FitResult, InputSet, TrainConfig, fit_model, fit_subsampled_svm, predict_logits
from .training.stopping import late_gain


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
    return _scored(predict_logits(model, data.x, data.features, tta=tta), data, classes)


def _scored(logits: torch.Tensor, data: InputSet, classes: Sequence[str]):
    pred = logits.argmax(1) if logits.numel() else torch.zeros(0, dtype=torch.long)
    return logits, metrics.score(data.labels, pred, classes)


def _validation_logits(fit: FitResult, val: InputSet, tta: bool) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(ensemble, its network) test-time-augmented validation logits from the network's views that
    the fit already computed (:attr:`FitResult.net_val_views`) for this very ``val`` (same tensor,
    not merely the same length); None otherwise."""
    views = fit.net_val_views
    if not tta or views is None or not isinstance(fit.model, NetSVMEnsemble) or fit.net_val_x is not val.x:
        return None
    return fit.model.combine_views(views, torch.as_tensor(val.features)).mean(0), views.mean(0)


def fit_svm_baseline(train: InputSet, n_classes: int, seed: int) -> Optional[Tuple[nn.Module, Dict]]:
    """``(SVM, fit info)``: the SVM baseline on (a bounded stratified subsample of) the training part,
    fitted exactly as an ensemble fits its SVM; None without features or with one class."""
    if train.features is None or len(torch.unique(train.labels)) < 2:
        return None
    return fit_subsampled_svm(train, n_classes, seed)


def auto_network(svm_score: Optional[Dict], n_classes: int) -> Tuple[Sequence[str], Optional[Dict]]:
    """The candidates ``auto`` chooses among, from the SVM's validation scores (module doc, step 1).

    Returns :data:`~emclassify.models.AUTO_CANDIDATES` when the handcrafted features separate the
    classes, else :data:`~emclassify.models.AUTO_CANDIDATES_IMAGE_ONLY`, and the measurement.
    """
    if svm_score is None:
        return AUTO_CANDIDATES, None
    chance = 1.0 / n_classes
    above = (svm_score["balanced_accuracy"] - chance) / (1.0 - chance)
    informative = bool(above >= AUTO_FEATURES_INFORMATIVE)
    candidates = AUTO_CANDIDATES if informative else AUTO_CANDIDATES_IMAGE_ONLY
    return candidates, {"svm_balanced_accuracy": svm_score["balanced_accuracy"], "above_chance": round(above, 4),
                        "threshold": AUTO_FEATURES_INFORMATIVE, "informative": informative,
                        "network": ensemble_member(candidates[0])}


def fit_assessed(train: InputSet, val: InputSet, classes: Sequence[str], pcfg: PreprocessConfig, cfg: TrainConfig,
                 on_epoch=None, cancel=None, where: str = "validation") -> Assessed:
    """Fit ``cfg.arch`` on ``train`` and assess it on ``val`` (see module doc)."""
    k = len(classes)
    cfg = cfg.resolved(len(train), pcfg.size)  # callers that report the epochs resolve first; idempotent
    requested = cfg.arch
    fitted_svm = svm_logits = svm_score = features_note = None
    if requested == AUTO:
        # The baseline SVM first: its validation score decides whether the network sees the features.
        fitted_svm = fit_svm_baseline(train, k, cfg.seed)
        if fitted_svm is not None and len(val):
            svm_logits, svm_score = _score(fitted_svm[0], val, classes)
        candidates, features_note = auto_network(svm_score, k)
        arch = candidates[0]
    else:
        arch = requested
    run_cfg = TrainConfig(**{**cfg.to_dict(), "arch": arch})
    fit = fit_model(train, val, classes, pcfg, run_cfg, on_epoch=on_epoch, cancel=cancel, fitted_svm=fitted_svm)
    model = fit.model
    reused = _validation_logits(fit, val, cfg.tta)
    logits, score = _scored(reused[0], val, classes) if reused else _score(model, val, classes, cfg.tta)
    if arch == SVM:
        svm = fit.model
    elif isinstance(fit.model, NetSVMEnsemble):
        svm = fit.model.svm  # the baseline SVM itself unless a synthetic top-up refitted it
    else:
        fitted_svm = fitted_svm or fit_svm_baseline(train, k, cfg.seed)
        svm = fitted_svm[0] if fitted_svm else None
    scored_svm = fitted_svm[0] if svm_score is not None else None  # the SVM auto already scored
    if svm is not None and svm is not scored_svm:
        svm_logits, svm_score = _score(svm, val, classes)
    scores = {"model": score, "majority": guardrails.majority_scores(train.labels.numpy(), val.labels.numpy(), classes)}
    if svm_score is not None:
        scores["svm"] = svm_score
    selection = None
    if requested == AUTO and svm is not None and arch != SVM:
        # Candidates in order of preference on a tie: the ensemble, its network alone (wins where the
        # SVM is weak, e.g. features from automatic segmentation), the SVM alone (wins on small data).
        options = {arch: (model, logits, score, fit)}
        if isinstance(fit.model, NetSVMEnsemble):
            net = fit.model.net
            net_logits, net_score = _scored(reused[1], val, classes) if reused else _score(net, val, classes, cfg.tta)
            options[ensemble_member(arch)] = (net, net_logits, net_score,
                                              # the ensemble's own fit record (epochs, precision, epoch plan)
                                              replace(fit, model=net, info={}, net_val_views=None, net_val_x=None))
        options[SVM] = (svm, svm_logits, scores["svm"],
                        FitResult(model=svm, stopped="completed", info={"selected_over": arch}))
        best = max(options[a][2]["macro_f1"] for a in options)
        kept = next(a for a in options if options[a][2]["macro_f1"] >= best - 1e-9)
        rule = f"higher macro-F1 on the {where} split (on a tie: ensemble, then network, then SVM)"
        if features_note is not None:
            rule = (f"the SVM on handcrafted features got {features_note['above_chance']:.2f} of the way from chance "
                    f"to perfect balanced accuracy ({'at least' if features_note['informative'] else 'under'} "
                    f"{AUTO_FEATURES_INFORMATIVE}): network {features_note['network']}; then {rule}")
        selection = {"rule": rule, "candidates": {a: o[2]["macro_f1"] for a, o in options.items()}, "kept": kept}
        if features_note is not None:
            selection["features"] = features_note
        if kept != arch:
            model, logits, scores["model"], fit = options[kept]
            arch = kept
    temperature, calib = calibrate(logits, val.labels) if len(val) else (1.0, {})
    train_counts = dict(zip(classes, torch.bincount(train.labels, minlength=k).tolist()))
    val_counts = dict(zip(classes, torch.bincount(val.labels, minlength=k).tolist()))
    flag_list = guardrails.flags(
        scores["model"], majority=scores["majority"], svm=scores.get("svm") if arch != SVM else None,
        train_counts=train_counts, eval_counts=val_counts, best_epoch=fit.best_epoch, epochs_run=len(fit.history),
        max_epochs=cfg.epochs, stopped=fit.stopped, where=where,
        late_gain=late_gain([h.val_macro_f1 for h in fit.history], int(cfg.patience)) if fit.history else None)
    return Assessed(model=model, arch=arch, fit=fit, temperature=temperature, calibration=calib, scores=scores,
                    flags=flag_list, selection=selection, svm_model=svm,
                    majority_class=int(np.bincount(train.labels.numpy(), minlength=k).argmax()))


__all__ = ["Assessed", "auto_network", "fit_assessed", "fit_svm_baseline"]
