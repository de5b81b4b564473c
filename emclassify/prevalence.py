"""Class prevalence with honest uncertainty: adjusted classify-and-count.

A classifier's raw class percentages are biased when it confuses classes (a 3 %
false-positive rate alone turns a 0 % class into 3 %). With the model's
confusion matrix ``C`` (rows = true, columns = predicted), measured on held-out
data and stored in its card, the expected predicted distribution is
``q = M^T p``, where ``M`` holds the rates ``P(pred | true)`` and ``p`` the true
prevalence. The adjusted estimate solves that system for ``p`` by non-negative
least squares with the constraint ``sum(p) = 1`` (Forman's adjusted
classify-and-count, generalised to many classes).

The point estimate is that solution at the observed rates and counts (an unseen
class's row taken as uniform).

Uncertainty (the 95 % interval) comes from both sources of error, under Jeffreys
priors (Dirichlet with 0.5 added to every count):

- each row of ``M``, ``M_i ~ Dirichlet(C_i + 0.5)``. A class with no held-out
  examples has a row drawn from ``Dirichlet(0.5, ..., 0.5)``: nothing is known of
  how it is recognised, and the interval widens accordingly (it is never assumed
  to be recognised perfectly);
- the folder's true composition given its predicted counts and that ``M``: the
  posterior of ``p`` (prior ``Dirichlet(0.5, ...)``) in the model where each particle's
  true class is drawn from ``p`` and its prediction from that class's row of ``M``,
  sampled by Gibbs sweeps over the particles' unknown true classes (data augmentation,
  as in Bayesian quantification: Ziegler & Czyz, "Bayesian quantification with black-box
  estimators", 2023).

Each of 2,000 draws of ``M`` runs its own chain from the point estimate. The interval spans
the 2.5th-97.5th percentiles of the chains' last states for both quantities a lab may mean: the
folder's own composition (how many of its particles are truly of each class: exactly 0 % when a
class is absent) and the prevalence ``p`` of the preparation the particles were drawn from (whose
posterior has no mass on the simplex's edge), and holds the point estimate. So no finite folder
gets a zero-width interval, also where a class is never predicted among thousands of particles.
(Until 2026-12-06 each posterior draw of ``q`` and ``M`` was solved by the least squares above:
near the edge nearly every solution was exactly 0 or 100 %, and a folder of 10,404 particles got
``100.00 % [100.00, 100.00]``.) The method's frequentist coverage is checked by simulation in
``tests/test_prevalence.py`` (folders of 10 to 5,000 particles, several mixes).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
from scipy.optimize import nnls

METHOD = ("adjusted classify-and-count (misclassification rates from the model card's held-out confusion "
          "matrix; constrained least squares); 95 % interval from 2,000 posterior draws (Jeffreys priors) of every "
          "confusion-matrix row and, given each, of the folder's true composition (Gibbs sampling over the "
          "particles' unknown true classes); classes without held-out examples are treated as unknown, not as "
          "perfectly recognised")
PRIOR = 0.5  # Jeffreys
# Gibbs sweeps per chain, each started at the point estimate: at 100 (50) the 95 % limits of 40 to
# 3,340 particles stayed within 1 (2.5) points of 1,000 sweeps', for a 3-class model of 87 %
# accuracy and for one confusing its classes half the time; a folder's 2,000 chains of 100 sweeps
# take 0.09-0.16 s (BENCHMARKS.md "Adjusted percentages near 0 and 100 %").
SWEEPS = 100


def _solve(m_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p >= 0, sum p = 1, minimising ||M^T p - q||."""
    k = len(q)
    weight = 1e3  # enforces sum(p) = 1 as a heavily weighted extra equation
    a = np.vstack([m_rows.T, weight * np.ones((1, k))])
    b = np.concatenate([q, [weight]])
    p, _ = nnls(a, b)
    s = p.sum()
    return p / s if s > 0 else np.full(k, 1.0 / k)


def posterior_draws(counts: np.ndarray, rows: np.ndarray, start: np.ndarray, rng: np.random.Generator,
                    sweeps: int = SWEEPS) -> Tuple[np.ndarray, np.ndarray]:
    """(composition, prevalence), float64 (B, k) each: one draw per chain, from its last sweep, of
    the folder's own composition (the share of its particles truly of each class) and of the
    prevalence ``p`` of the population they were drawn from (module doc).

    counts: int (k,), particles predicted per class; rows: float (B, k, k), chain b's rates
    ``P(pred | true)`` (rows true, columns predicted); start: float (k,), where every chain starts.
    Each sweep draws how many of the particles predicted j are truly i (multinomial with weights
    ``p_i M_ij``), then ``p ~ Dirichlet(true totals + 0.5)``.
    """
    if sweeps < 1:
        raise ValueError(f"sweeps must be at least 1, got {sweeps}")
    b, k = rows.shape[0], len(counts)
    p = np.tile(np.clip(start, 1e-6, None), (b, 1))
    p /= p.sum(axis=1, keepdims=True)
    predicted = np.broadcast_to(np.asarray(counts, np.int64), (b, k))
    for _ in range(sweeps):
        weights = p[:, :, None] * rows                       # B x true x pred
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
        true_counts = rng.multinomial(predicted, np.swapaxes(weights, 1, 2)).sum(axis=1)   # B x true
        gamma = rng.standard_gamma(true_counts + PRIOR)
        p = gamma / gamma.sum(axis=1, keepdims=True)
    return true_counts / max(1, int(np.sum(counts))), p


def observed_rates(cm: np.ndarray) -> np.ndarray:
    """``P(pred | true)`` per row as observed; a row without held-out examples is uniform (unknown)."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.where(rows > 0, cm / np.where(rows > 0, rows, 1), 1.0 / cm.shape[0])


def adjusted_prevalence(predicted_counts: Sequence[int], confusion: Sequence[Sequence[int]], classes: Sequence[str],
                        n_boot: int = 2000, seed: int = 0, sweeps: int = SWEEPS) -> Dict:
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
    rows = np.stack([rng.dirichlet(cm[i] + PRIOR, size=n_boot) for i in range(k)], axis=1)  # n_boot x true x pred
    composition, prevalence = posterior_draws(counts, rows, estimate, rng, sweeps)
    lo, hi = np.percentile(composition, [2.5, 97.5], axis=0)
    lo_p, hi_p = np.percentile(prevalence, [2.5, 97.5], axis=0)
    lo, hi = np.minimum.reduce([lo, lo_p, estimate]), np.maximum.reduce([hi, hi_p, estimate])
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
