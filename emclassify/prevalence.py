"""Class prevalence with honest uncertainty: adjusted classify-and-count.

A classifier's raw class percentages are biased when it confuses classes (a 3 %
false-positive rate alone turns a 0 % class into 3 %). With the model's
confusion matrix ``C`` (rows = true, columns = predicted), measured on held-out
data and stored in its card, the expected predicted distribution is
``q = M^T p``, where ``M`` holds the rates ``P(pred | true)`` and ``p`` the true
prevalence. The adjusted estimate solves that system for ``p`` by non-negative
least squares with the constraint ``sum(p) = 1`` (Forman's adjusted
classify-and-count, generalised to many classes).

Uncertainty (the 95 % interval) comes from both sources of error, drawn from
their posteriors under Jeffreys priors (Dirichlet with 0.5 added to every count):

- the predicted distribution of this folder, ``q ~ Dirichlet(counts + 0.5)``;
- each row of ``M``, ``M_i ~ Dirichlet(C_i + 0.5)``. A class with no held-out
  examples has a row drawn from ``Dirichlet(0.5, ..., 0.5)``: nothing is known of
  how it is recognised, and the interval widens accordingly (it is never assumed
  to be recognised perfectly).

Each of 2,000 draws is solved the same way; the interval is the 2.5th-97.5th
percentile of the solutions; the point estimate is the solution at the observed
rates and counts (an unseen class's row taken as uniform). Both sources are continuous, so a finite folder never gets a zero-width
interval. The method's frequentist coverage is checked by simulation in
``tests/test_prevalence.py`` (folders of 10 to 5,000 particles, several mixes).
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
from scipy.optimize import nnls

METHOD = ("adjusted classify-and-count (misclassification rates from the model card's held-out confusion "
          "matrix; constrained least squares); 95 % interval from 2,000 posterior draws (Jeffreys priors) of the "
          "folder's predicted distribution and of every confusion-matrix row; classes without held-out examples "
          "are treated as unknown, not as perfectly recognised")
PRIOR = 0.5  # Jeffreys


def _solve(m_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p >= 0, sum p = 1, minimising ||M^T p - q||."""
    k = len(q)
    weight = 1e3  # enforces sum(p) = 1 as a heavily weighted extra equation
    a = np.vstack([m_rows.T, weight * np.ones((1, k))])
    b = np.concatenate([q, [weight]])
    p, _ = nnls(a, b)
    s = p.sum()
    return p / s if s > 0 else np.full(k, 1.0 / k)


def observed_rates(cm: np.ndarray) -> np.ndarray:
    """``P(pred | true)`` per row as observed; a row without held-out examples is uniform (unknown)."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.where(rows > 0, cm / np.where(rows > 0, rows, 1), 1.0 / cm.shape[0])


def adjusted_prevalence(predicted_counts: Sequence[int], confusion: Sequence[Sequence[int]], classes: Sequence[str],
                        n_boot: int = 2000, seed: int = 0) -> Dict:
    """Adjusted class percentages with 95 % intervals.

    predicted_counts: files predicted per class (model order). confusion: held-out
    confusion matrix (rows = true). Returns {"method", "n", "unseen_classes", "classes": {c:
    {"percent", "ci95": [lo, hi], "raw_percent"}}} with percentages in 0..100.
    """
    counts = np.asarray(predicted_counts, dtype=np.int64)
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    if cm.shape != (k, k) or counts.shape != (k,):
        raise ValueError(f"confusion matrix {cm.shape} and counts {counts.shape} do not match {k} classes")
    if (cm < 0).any() or (counts < 0).any():
        raise ValueError("counts must be non-negative")
    n = int(counts.sum())
    unseen = [c for c, row in zip(classes, cm) if row.sum() == 0]
    if n == 0:
        return {"method": METHOD, "n": 0, "unseen_classes": unseen,
                "classes": {c: {"percent": None, "ci95": [None, None], "raw_percent": None} for c in classes}}
    q = counts / n
    estimate = _solve(observed_rates(cm), q)
    rng = np.random.default_rng(seed)
    qs = rng.dirichlet(counts + PRIOR, size=n_boot)
    rows = np.stack([rng.dirichlet(cm[i] + PRIOR, size=n_boot) for i in range(k)], axis=1)  # n_boot x k x k
    boots = np.stack([_solve(rows[b], qs[b]) for b in range(n_boot)])
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    return {
        "method": METHOD,
        "n": n,
        "unseen_classes": unseen,
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
