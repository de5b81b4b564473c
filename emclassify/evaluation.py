"""Honest evaluation: k-fold cross-validation and paired model comparison.

- :func:`make_folds`: stratified k-fold; when every sample has a group (e.g. its
  source micrograph), stratified *group* k-fold, so no group is on both sides.
  Same seed and data -> same folds.
- :func:`cross_validate`: per fold, hold out a group-aware validation split of the
  training part, fit and assess on it (:func:`emclassify.assess.fit_assessed`:
  the ``auto`` choice, a temperature, baselines), predict the test fold with the
  model and both baselines (majority class, SVM on handcrafted features).
  Out-of-fold predictions of every sample give the pooled confusion matrix and
  metrics; per-fold metrics give mean ± sd; :meth:`CVResult.flags` the warnings.
- :func:`compare`: several architectures on identical folds, with paired tests:
  per-fold macro-F1 (paired t-test) and per-sample correctness (exact McNemar).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import metrics
from .events import Decoding, EpochEnded, FoldEnded, FoldStarted, Progress, RemainingTime, emit
from .runtime import CancelToken
from .io import Dataset
from .models import SVM, parse_arch
from .preprocess import PreprocessConfig
from .training import EpochLog, InputSet, TrainConfig, holdout_split, load_inputs, predict_logits, predict_views
from .training.splits import quiet_splits


def inner_training_size(n: int, k: int, val_fraction: float) -> int:
    """Images a fold's network trains on: (k-1)/k of ``n``, less the inner validation share."""
    return max(1, round(n * (k - 1) / k * (1 - val_fraction)))


def make_folds(labels: Sequence[int], groups: Optional[Sequence], k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every sample. Group-aware when all samples have a group."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(labels)
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    if len(y) < k:
        raise ValueError(f"{len(y)} samples cannot make {k} folds")
    fold = np.full(len(y), -1, dtype=np.int64)
    use_groups = groups is not None and all(g is not None for g in groups)
    if use_groups:
        if len(set(groups)) < k:
            raise ValueError(f"only {len(set(groups))} groups: too few for {k} group-aware folds")
        splits = quiet_splits(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed), y, y, np.asarray(groups))
    else:
        splits = quiet_splits(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed), y, y)
    for i, (_, test) in enumerate(splits):
        fold[test] = i
    return fold


@dataclass
class FoldResult:
    fold: int
    n_train: int
    n_test: int
    metrics: Dict
    history: List[EpochLog]
    best_epoch: int
    stopped: str
    seconds: float
    info: Dict = field(default_factory=dict)


@dataclass
class CVResult:
    """Out-of-fold results of one architecture.

    folds: fold index per sample; probabilities: float64 ``N x C`` out-of-fold;
    labels/predictions: int ``N``; samples: aligned with the arrays.
    """

    arch: str
    classes: List[str]
    samples: list
    labels: np.ndarray
    folds: np.ndarray
    probabilities: np.ndarray
    fold_results: List[FoldResult]
    settings: Dict
    seconds: float
    complete: bool = True
    uncalibrated: Optional[np.ndarray] = None          # N x C out-of-fold, before temperature scaling
    baselines: Dict[str, np.ndarray] = field(default_factory=dict)  # name -> N x C out-of-fold
    train_counts: Dict[str, int] = field(default_factory=dict)
    without_tta: Optional[np.ndarray] = None            # N x C out-of-fold, same models, no test-time augmentation

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def evaluated(self) -> np.ndarray:
        """Mask of samples whose fold ran (all of them unless cancelled)."""
        done = {f.fold for f in self.fold_results}
        return np.isin(self.folds, sorted(done))

    def pooled(self) -> Dict:
        m = self.evaluated
        return metrics.summary(metrics.confusion_matrix(self.labels[m], self.predictions[m], len(self.classes)),
                               self.classes)

    def pooled_baselines(self) -> Dict[str, Dict]:
        m = self.evaluated
        return {name: metrics.score(self.labels[m], p[m].argmax(1), self.classes) for name, p in self.baselines.items()}

    def calibration_dict(self) -> Dict:
        from .calibration import expected_calibration_error

        m = self.evaluated
        if self.uncalibrated is None or not m.any():
            return {}
        return {"method": "temperature scaling, fitted per fold on its inner validation split",
                "temperatures": [f.info.get("temperature") for f in self.fold_results],
                "ece_before": expected_calibration_error(self.uncalibrated[m], self.labels[m]),
                "ece_after": expected_calibration_error(self.probabilities[m], self.labels[m])}

    def flags(self) -> List[Dict[str, str]]:
        """Warnings on the pooled out-of-fold results (see :mod:`emclassify.guardrails`)."""
        from . import guardrails

        pooled, base = self.pooled(), self.pooled_baselines()
        out = guardrails.flags(pooled, majority=base.get("majority"),
                               svm=base.get("svm") if self.arch != "svm" else None,
                               train_counts=self.train_counts,
                               eval_counts={c: int(v["support"]) for c, v in pooled["per_class"].items()},
                               where="out-of-fold")
        for f in self.fold_results:
            for flag in f.info.get("flags", []):
                if flag["code"] in ("kept-first-epoch", "kept-last-epoch", "class-missing"):
                    out.append({"code": flag["code"], "message": f"fold {f.fold + 1}: {flag['message']}"})
        return out

    def metrics_dict(self) -> Dict:
        """The content of ``metrics.json``."""
        pooled = self.pooled()
        per_fold = [{"fold": f.fold, "n_train": f.n_train, "n_test": f.n_test, "best_epoch": f.best_epoch,
                     "stopped": f.stopped, "seconds": round(f.seconds, 2), "kept_arch": f.info.get("arch", self.arch),
                     "temperature": f.info.get("temperature"),
                     **({"epoch_plan": f.info["epoch_plan"]} if f.info.get("epoch_plan") else {}),
                     **({"precision": f.info["precision"]} if f.info.get("precision") else {}),
                     **({"features": f.info["selection"]["features"]}
                        if (f.info.get("selection") or {}).get("features") else {}),
                     **_compact(f.metrics)}
                    for f in self.fold_results]
        keys = ["accuracy", "macro_f1"]
        mean_sd = {k: _mean_sd([f.metrics[k] for f in self.fold_results]) for k in keys}
        mean_sd["per_class"] = {
            c: {m: _mean_sd([f.metrics["per_class"][c][m] for f in self.fold_results])
                for m in ("tpr", "tnr", "ppv", "npv", "f1")}
            for c in self.classes
        }
        return {
            "arch": self.arch,
            "classes": self.classes,
            "n_samples": int(self.evaluated.sum()),
            "n_folds": int(self.folds.max() + 1) if len(self.folds) else 0,
            "complete": self.complete,
            "accuracy": pooled["accuracy"],
            "macro_f1": pooled["macro_f1"],
            "per_class": pooled["per_class"],
            "confusion_matrix": pooled["confusion_matrix"],
            "balanced_accuracy": pooled["balanced_accuracy"],
            "baselines": {name: {k: v[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "per_class")}
                          for name, v in self.pooled_baselines().items()},
            "calibration": self.calibration_dict(),
            **({"without_tta": _plain_scores(self)} if self.without_tta is not None else {}),
            "flags": self.flags(),
            "folds": per_fold,
            "mean_sd": mean_sd,
            "settings": self.settings,
            "seconds": round(self.seconds, 1),
        }


def _plain_scores(r: "CVResult") -> Dict:
    m = r.evaluated
    s = metrics.score(r.labels[m], r.without_tta[m].argmax(1), r.classes)
    return {k: s[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}


def _mean_sd(values) -> Dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()) if v.size else 0.0, "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def _compact(m: Dict) -> Dict:
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()},
            "confusion_matrix": m["confusion_matrix"]}




def cross_validate(
    dataset: Dataset,
    pcfg: PreprocessConfig,
    cfg: TrainConfig,
    k: int = 5,
    inputs: Optional[InputSet] = None,
    folds: Optional[np.ndarray] = None,
    progress: Optional[Progress] = None,
    cancel: Optional[CancelToken] = None,
    clock: Optional[RemainingTime] = None,
) -> CVResult:
    """k-fold CV of ``cfg.arch``. ``inputs``/``folds`` may be shared between architectures.

    progress: receives :class:`~emclassify.events.Decoding` (when ``inputs`` is None), then per
    fold :class:`~emclassify.events.FoldStarted`, :class:`~emclassify.events.EpochEnded` and
    :class:`~emclassify.events.FoldEnded`. clock: the remaining-time estimate of a larger call
    (:func:`compare` shares one across architectures).
    """
    from .assess import fit_assessed
    from .training import refuse_too_small

    t0 = time.perf_counter()
    if inputs is None:
        inputs = load_inputs(dataset.samples, pcfg, dataset.classes, want_features=True,
                             progress=lambda done, total: emit(progress, Decoding(done, total)))
        refuse_too_small(inputs)
    _, uses_features = parse_arch(cfg.arch)
    if uses_features and inputs.features is None:
        raise ValueError(f"{cfg.arch} needs handcrafted features but the inputs were loaded without them")
    labels = inputs.labels.numpy()
    groups = [s.group for s in inputs.samples] if dataset.has_groups else None
    if folds is None:
        folds = make_folds(labels, groups, k, cfg.seed)
    k = int(folds.max()) + 1
    # one epoch budget for every fold
    cfg = cfg.resolved(inner_training_size(len(labels), k, cfg.val_fraction), pcfg.size)
    epochs_based = cfg.arch != SVM
    if clock is None:
        clock = RemainingTime(runs=k, epochs=cfg.epochs)
    n_classes = len(dataset.classes)
    probs = np.zeros((len(labels), n_classes))
    raw = np.zeros_like(probs)
    plain = np.zeros_like(probs)
    base = {"majority": np.zeros_like(probs)}
    if inputs.features is not None:
        base["svm"] = np.zeros_like(probs)
    results: List[FoldResult] = []
    complete = True
    for f in range(k):
        if cancel is not None and cancel.cancelled:
            complete = False
            break
        tf = time.perf_counter()
        emit(progress, FoldStarted(cfg.arch, f, k))
        if epochs_based:
            clock.run_started()
        train_idx = np.nonzero(folds != f)[0]
        test_idx = np.nonzero(folds == f)[0]
        tr_groups = [groups[i] for i in train_idx] if groups else None
        inner_tr, inner_va = holdout_split(labels[train_idx], tr_groups, cfg.val_fraction, cfg.seed + f)
        res = fit_assessed(
            inputs.subset(train_idx[inner_tr]), inputs.subset(train_idx[inner_va]), dataset.classes, pcfg, cfg,
            on_epoch=lambda log, f=f: emit(progress, EpochEnded(cfg.arch, log, f, k, clock.epoch_ended(log.seconds))),
            cancel=cancel, where=f"fold {f + 1} inner validation",
        )
        test = inputs.subset(test_idx)
        if cfg.tta:  # and the same model without test-time augmentation (its identity view), to report what TTA adds
            views = predict_views(res.model, test.x, test.features)
            logits = views.mean(0).double()
            plain[test_idx] = torch.softmax(views[0].double() / res.temperature, dim=1).numpy()
        else:
            logits = predict_logits(res.model, test.x, test.features).double()
        raw[test_idx] = torch.softmax(logits, dim=1).numpy()
        probs[test_idx] = torch.softmax(logits / res.temperature, dim=1).numpy()
        base["majority"][test_idx, res.majority_class] = 1.0
        if res.svm_model is not None and "svm" in base:
            base["svm"][test_idx] = torch.softmax(predict_logits(res.svm_model, test.x, test.features).double(),
                                                  dim=1).numpy()
        fm = metrics.summary(metrics.confusion_matrix(labels[test_idx], probs[test_idx].argmax(1), n_classes),
                             dataset.classes)
        info = {**res.fit.info, "arch": res.arch, "temperature": res.temperature, "flags": res.flags,
                **({"epoch_plan": note} if (note := res.fit.epoch_plan_note(dataset.classes)) else {}),
                **({"precision": res.fit.precision} if res.fit.history else {}),
                **({"selection": res.selection} if res.selection else {})}
        results.append(FoldResult(f, len(train_idx), len(test_idx), fm, res.fit.history, res.fit.best_epoch,
                                  res.fit.stopped, time.perf_counter() - tf, info))
        if epochs_based:
            clock.run_ended()
        emit(progress, FoldEnded(cfg.arch, f, k, fm))
        if res.fit.stopped in ("interrupted", "cancelled"):
            complete = False
            break
    settings = {"arch": cfg.arch, "folds": k, "group_aware": groups is not None, "preprocess": pcfg.to_dict(),
                "training": cfg.to_dict(), "data_fingerprint": dataset.fingerprint(), "root": str(dataset.root),
                "class_order": dataset.class_order, "skipped_files": inputs.errors}
    train_counts = dict(zip(dataset.classes, np.bincount(labels, minlength=n_classes).tolist()))
    return CVResult(cfg.arch, list(dataset.classes), inputs.samples, labels, folds, probs, results, settings,
                    time.perf_counter() - t0, complete, raw, base, train_counts, plain if cfg.tta else None)


@dataclass
class Comparison:
    results: List[CVResult]
    tests: List[Dict]

    def table(self) -> List[Dict]:
        rows = []
        for r in self.results:
            m = r.metrics_dict()
            rows.append({"arch": r.arch, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                         "macro_f1_fold_mean": m["mean_sd"]["macro_f1"]["mean"],
                         "macro_f1_fold_sd": m["mean_sd"]["macro_f1"]["sd"],
                         "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()}})
        return rows


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> Dict:
    """Exact (binomial) McNemar test on paired per-sample correctness."""
    from scipy.stats import binomtest

    b = int(np.sum(correct_a & ~correct_b))  # A right, B wrong
    c = int(np.sum(~correct_a & correct_b))
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c > 0 else 1.0
    return {"a_only_correct": b, "b_only_correct": c, "p_value": p}


def paired_fold_test(f1_a: Sequence[float], f1_b: Sequence[float]) -> Dict:
    """Paired t-test of per-fold macro-F1 (two-sided)."""
    from scipy.stats import ttest_rel

    a, b = np.asarray(f1_a, dtype=np.float64), np.asarray(f1_b, dtype=np.float64)
    diff = a - b
    out = {"mean_difference": float(diff.mean()) if diff.size else 0.0, "t": None, "p_value": None}
    if diff.size < 2:
        out["note"] = "fewer than 2 folds: no test"
    elif np.allclose(diff, diff[0]):
        out["note"] = "the same difference in every fold: t-test undefined"
        out["p_value"] = 1.0 if np.isclose(diff[0], 0.0) else None
    else:
        t = ttest_rel(a, b)
        out["t"], out["p_value"] = float(t.statistic), float(t.pvalue)
    return out


def compare(dataset: Dataset, archs: Sequence[str], pcfg: PreprocessConfig, cfg: TrainConfig, k: int = 5,
            alpha: float = 0.05, progress: Optional[Progress] = None,
            cancel: Optional[CancelToken] = None) -> Comparison:
    """Cross-validate every architecture on identical folds and test each pair for a difference.

    progress: as :func:`cross_validate` (events carry their architecture); the remaining time
    covers all architectures."""
    if len(archs) < 2:
        raise ValueError("compare needs at least two architectures")
    for a in archs:
        parse_arch(a)
    from .training import refuse_too_small

    inputs = load_inputs(dataset.samples, pcfg, dataset.classes, want_features=True,
                         progress=lambda done, total: emit(progress, Decoding(done, total)))
    refuse_too_small(inputs)
    groups = [s.group for s in inputs.samples] if dataset.has_groups else None
    folds = make_folds(inputs.labels.numpy(), groups, k, cfg.seed)
    cfg = cfg.resolved(inner_training_size(len(inputs), k, cfg.val_fraction), pcfg.size)
    clock = RemainingTime(runs=k * sum(1 for a in archs if a != SVM), epochs=cfg.epochs)
    results = []
    for a in archs:
        if cancel is not None and cancel.cancelled:
            break
        acfg = TrainConfig(**{**cfg.to_dict(), "arch": a})
        results.append(cross_validate(dataset, pcfg, acfg, k, inputs=inputs, folds=folds, cancel=cancel,
                                      progress=progress, clock=clock))
    tests = []
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            ra, rb = results[i], results[j]
            both = ra.evaluated & rb.evaluated
            mc = mcnemar_exact((ra.predictions == ra.labels)[both], (rb.predictions == rb.labels)[both])
            common = sorted({f.fold for f in ra.fold_results} & {f.fold for f in rb.fold_results})
            fa = [next(f for f in ra.fold_results if f.fold == c).metrics["macro_f1"] for c in common]
            fb = [next(f for f in rb.fold_results if f.fold == c).metrics["macro_f1"] for c in common]
            pt = paired_fold_test(fa, fb)
            significant = mc["p_value"] < alpha
            better = ra.arch if mc["a_only_correct"] > mc["b_only_correct"] else rb.arch
            verdict = (f"{better} is significantly more accurate (McNemar p = {mc['p_value']:.3g} < {alpha})"
                       if significant else
                       f"no significant difference in accuracy (McNemar p = {mc['p_value']:.3g} ≥ {alpha})")
            tests.append({"a": ra.arch, "b": rb.arch, "mcnemar": mc, "fold_macro_f1_ttest": pt,
                          "alpha": alpha, "significant": significant, "verdict": verdict})
    return Comparison(results, tests)
