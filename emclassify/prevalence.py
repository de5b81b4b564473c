"""Class prevalence with honest uncertainty: adjusted classify-and-count.

A classifier's raw class percentages are biased when it confuses classes (a 3 %
false-positive rate alone turns a 0 % class into 3 %). With the model's
confusion matrix ``C`` (rows = true, columns = predicted), measured on held-out
data and stored in its card, the expected predicted distribution is
``q = M^T p``, where ``M`` is ``C`` with rows normalised (``P(pred | true)``) and
``p`` the true prevalence. The adjusted estimate solves that system for ``p`` by
non-negative least squares with the constraint ``sum(p) = 1`` (Forman's adjusted
classify-and-count, generalised to many classes).

The 95 % interval is a percentile bootstrap (2,000 replicates, fixed seed) that
resamples both sources of error: the predicted counts of this sample
(multinomial) and every row of the confusion matrix (multinomial with that row's
count), each replicate solved the same way.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
from scipy.optimize import nnls

METHOD = ("adjusted classify-and-count (misclassification rates from the model card's held-out confusion "
          "matrix; constrained least squares), 95 % percentile bootstrap over the sample's predictions and the "
          "confusion matrix rows")


def _solve(m_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p >= 0, sum p = 1, minimising ||M^T p - q||."""
    k = len(q)
    weight = 1e3  # enforces sum(p) = 1 as a heavily weighted extra equation
    a = np.vstack([m_rows.T, weight * np.ones((1, k))])
    b = np.concatenate([q, [weight]])
    p, _ = nnls(a, b)
    s = p.sum()
    return p / s if s > 0 else np.full(k, 1.0 / k)


def _row_normalise(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    k = cm.shape[0]
    # A class never seen in the held-out data: assume it is recognised perfectly (no information).
    return np.where(rows > 0, cm / np.where(rows > 0, rows, 1), np.eye(k))


def adjusted_prevalence(predicted_counts: Sequence[int], confusion: Sequence[Sequence[int]], classes: Sequence[str],
                        n_boot: int = 2000, seed: int = 0) -> Dict:
    """Adjusted class percentages with 95 % intervals.

    predicted_counts: files predicted per class (model order). confusion: held-out
    confusion matrix (rows = true). Returns {"method", "n", "classes": {c: {"percent",
    "ci95": [lo, hi], "raw_percent"}}} with percentages in 0..100.
    """
    counts = np.asarray(predicted_counts, dtype=np.int64)
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    if cm.shape != (k, k) or counts.shape != (k,):
        raise ValueError(f"confusion matrix {cm.shape} and counts {counts.shape} do not match {k} classes")
    n = int(counts.sum())
    if n == 0:
        return {"method": METHOD, "n": 0, "classes": {c: {"percent": None, "ci95": [None, None], "raw_percent": None}
                                                      for c in classes}}
    q = counts / n
    estimate = _solve(_row_normalise(cm), q)
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, k))
    row_totals = cm.sum(axis=1)
    row_probs = _row_normalise(cm)
    for b in range(n_boot):
        qb = rng.multinomial(n, q) / n
        cmb = np.array([rng.multinomial(row_totals[i], row_probs[i]) if row_totals[i] else cm[i] for i in range(k)])
        boots[b] = _solve(_row_normalise(cmb), qb)
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    return {
        "method": METHOD,
        "n": n,
        "classes": {c: {"percent": 100 * float(estimate[i]), "ci95": [100 * float(lo[i]), 100 * float(hi[i])],
                        "raw_percent": 100 * float(q[i])} for i, c in enumerate(classes)},
    }


def card_confusion(card) -> tuple:
    """The held-out confusion matrix stored in a model card, preferring CV over a validation split.

    Returns ``(matrix or None, source name)``.
    """
    for key in ("cv", "validation"):
        m = card.metrics.get(key, {})
        cm = m.get("confusion_matrix") if isinstance(m, dict) else None
        if cm is not None and np.asarray(cm).shape == (len(card.classes), len(card.classes)):
            return np.asarray(cm), key
    return None, ""
