"""Guardrails: baselines scored beside every model, and the flags a lab must see.

Every evaluation of a model (``train``'s validation split, each ``cv`` fold) also
scores two baselines on exactly the same data:

- ``majority``: always the class most frequent in the training part;
- ``svm``: the RBF SVM on handcrafted features (:mod:`emclassify.models.svm`),
  trained on the same training part (at most :data:`SVM_BASELINE_MAX_TRAIN`
  examples, a stratified subsample above that, to bound its O(n²) cost).

:func:`flags` turns the numbers into warnings that are stored in the model card
(``metrics.flags``), printed by the CLI, shown in reports and in the GUI:

=========================  ==================================================================
code                       when
=========================  ==================================================================
``below-majority``         balanced accuracy or macro-F1 not above the majority baseline's
``below-svm``              macro-F1 more than 0.02 below the SVM baseline's on the same data
``few-examples``           a class has fewer than :data:`MIN_CLASS_EXAMPLES` training examples
``class-missing``          a class has no example in the validation split / a test fold
``kept-first-epoch``       early stopping kept epoch 1 (the network barely learned)
``kept-last-epoch``        the last allowed epoch was the best and validation macro-F1 (averaged with
                           the neighbouring epochs', as the epoch is chosen) was still rising: more than
                           :data:`LATE_GAIN_MARGIN` above the best of the epochs a patience or more
                           before it (more epochs may help)
=========================  ==================================================================
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from . import metrics

MIN_CLASS_EXAMPLES = 20        # training examples per class below which estimates are unreliable
SVM_MARGIN = 0.02              # macro-F1 below the SVM's by more than this is flagged
SVM_BASELINE_MAX_TRAIN = 4000  # stratified subsample for the SVM baseline above this
# A fit that ran to its last epoch and kept it is flagged only when validation macro-F1 was still
# rising by more than this over its last `patience` epochs. With a one-cycle schedule the last,
# annealed epochs are often the best by a hair: the NanoShapes CV's fold 1 kept epoch 24 at 0.956
# against 0.955 at epoch 16, a curve level since epoch 15 (BENCHMARKS.md "Seventh round").
LATE_GAIN_MARGIN = 0.01


def majority_scores(train_labels: np.ndarray, test_labels: np.ndarray, classes: Sequence[str]) -> Dict:
    """Metrics of always predicting the training part's most frequent class."""
    k = len(classes)
    majority = int(np.bincount(np.asarray(train_labels), minlength=k).argmax())
    pred = np.full(len(test_labels), majority)
    out = metrics.score(test_labels, pred, classes)
    out["predicts"] = classes[majority]
    return out


def subsample_for_svm(labels: np.ndarray, seed: int, limit: int = SVM_BASELINE_MAX_TRAIN) -> np.ndarray:
    """Indices of at most ``limit`` examples, every class kept in proportion (rare classes whole)."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        n = max(min(len(idx), 20), int(round(limit * len(idx) / len(labels))))
        keep.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def _flag(code: str, message: str) -> Dict[str, str]:
    return {"code": code, "message": message}


def flags(model: Dict, *, majority: Optional[Dict] = None, svm: Optional[Dict] = None,
          train_counts: Optional[Dict[str, int]] = None, eval_counts: Optional[Dict[str, int]] = None,
          best_epoch: int = 0, epochs_run: int = 0, max_epochs: int = 0, stopped: str = "",
          late_gain: Optional[float] = None, where: str = "validation") -> List[Dict[str, str]]:
    """Warnings for one evaluated model (see the module doc). ``model``/``majority``/``svm`` are
    :func:`emclassify.metrics.summary` dicts on the same evaluation data. ``late_gain``: the fit's
    :func:`emclassify.training.stopping.late_gain` (None: unknown, a kept last epoch is flagged)."""
    out = []
    if majority is not None:
        worse = [name for name in ("balanced_accuracy", "macro_f1") if model[name] <= majority[name] + 1e-9]
        if worse:
            out.append(_flag("below-majority",
                             f"on the {where} data the model is not better than always answering "
                             f"'{majority.get('predicts', 'the majority class')}' "
                             + ", ".join(f"({n.replace('_', ' ')} {model[n]:.3f} vs {majority[n]:.3f})" for n in worse)
                             + ": do not use its predictions"))
    if svm is not None and model["macro_f1"] < svm["macro_f1"] - SVM_MARGIN:
        out.append(_flag("below-svm", f"on the {where} data the model's macro-F1 {model['macro_f1']:.3f} is below the "
                                      f"SVM on handcrafted features ({svm['macro_f1']:.3f})"))
    for c, n in (train_counts or {}).items():
        if n < MIN_CLASS_EXAMPLES:
            out.append(_flag("few-examples", f"class '{c}' has only {n} training examples (fewer than "
                                             f"{MIN_CLASS_EXAMPLES}): its scores are unreliable"))
    for c, n in (eval_counts or {}).items():
        if n == 0:
            out.append(_flag("class-missing", f"the {where} data holds no '{c}' particle: how well the model "
                                              "recognises it was not measured"))
    if epochs_run:
        if best_epoch == 1 and epochs_run > 1:
            out.append(_flag("kept-first-epoch", "the best validation score was after the first epoch: the network "
                                                 "barely learned (too little data, or a learning rate too high?)"))
        elif best_epoch == epochs_run == max_epochs and stopped == "completed" and max_epochs > 1 \
                and (late_gain is None or late_gain > LATE_GAIN_MARGIN):
            rising = "" if late_gain is None else f" and validation macro-F1 was still rising (+{late_gain:.3f})"
            out.append(_flag("kept-last-epoch", f"the last allowed epoch was the best{rising}: the model may be "
                                                "undertrained (try more --epochs)"))
    return out


def format_flags(items: Sequence[Dict[str, str]], prefix: str = "WARNING: ") -> str:
    return "\n".join(f"{prefix}{f['message']} [{f['code']}]" for f in items)


__all__ = ["LATE_GAIN_MARGIN", "MIN_CLASS_EXAMPLES", "SVM_BASELINE_MAX_TRAIN", "flags", "format_flags", "majority_scores",
           "subsample_for_svm"]
