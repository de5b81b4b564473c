"""Classification metrics from a confusion matrix (rows = true, columns = predicted).

Zero-division convention: a ratio whose denominator is 0 is reported as 0.0
(sklearn's ``zero_division=0``), so a class never predicted has PPV 0 and F1 0.

Why not scikit-learn's functions: the lab report needs TNR and NPV, which scikit-learn does not
compute, and all five come from one confusion matrix here; a property test holds every figure
scikit-learn does compute (confusion matrix, precision, recall, F1, macro-F1, balanced accuracy)
equal to scikit-learn's (tests/test_metrics.py).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; rows = true class, columns = predicted."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def per_class(cm: np.ndarray, classes: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """One-vs-rest TPR (recall), TNR, PPV (precision), NPV, F1 and support per class."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    out = {}
    for k, c in enumerate(classes):
        tp = cm[k, k]
        fn = cm[k].sum() - tp
        fp = cm[:, k].sum() - tp
        tn = total - tp - fn - fp
        tpr, ppv = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
        out[c] = {
            "tpr": tpr,
            "tnr": _ratio(tn, tn + fp),
            "ppv": ppv,
            "npv": _ratio(tn, tn + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "support": int(cm[k].sum()),
        }
    return out


def summary(cm: np.ndarray, classes: Sequence[str]) -> Dict:
    """accuracy, balanced_accuracy (mean recall over classes present in truth), macro_f1 (mean over
    classes present in truth or prediction), per_class, confusion_matrix."""
    cm = np.asarray(cm)
    pc = per_class(cm, classes)
    present = [c for k, c in enumerate(classes) if cm[k].sum() + cm[:, k].sum() > 0]
    macro = float(np.mean([pc[c]["f1"] for c in present])) if present else 0.0
    in_truth = [c for k, c in enumerate(classes) if cm[k].sum() > 0]
    return {
        "accuracy": _ratio(np.trace(cm), cm.sum()),
        "balanced_accuracy": float(np.mean([pc[c]["tpr"] for c in in_truth])) if in_truth else 0.0,
        "macro_f1": macro,
        "per_class": pc,
        "confusion_matrix": cm.astype(int).tolist(),
    }


def score(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> Dict:
    """:func:`summary` of the confusion matrix of ``y_true`` against ``y_pred``."""
    return summary(confusion_matrix(y_true, y_pred, len(classes)), classes)


__all__: List[str] = ["confusion_matrix", "per_class", "score", "summary"]
