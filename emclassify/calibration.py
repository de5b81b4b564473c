"""Calibrated probabilities: temperature scaling and its measure, expected calibration error.

A network trained with class weights, label smoothing and early stopping gives
probabilities whose size does not match how often it is right. Temperature
scaling (Guo et al., 2017) divides the logits by one number ``T`` fitted to
minimise the negative log-likelihood on held-out data (``train``'s validation
split; each CV fold's inner validation split). ``T`` changes no predicted class,
only the confidence. It is stored in the model card
(``metrics.calibration.temperature``) and applied by every classification
(``emclassify batch``, the GUI), so the CSV's ``confidence`` is a calibrated
probability.

:func:`expected_calibration_error`: 15 equal-width confidence bins, the
sample-weighted mean of |accuracy - mean confidence| per bin (0 = perfect).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch

ECE_BINS = 15
T_RANGE = (0.05, 20.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature minimising the NLL of ``softmax(logits / T)``; 1.0 when there is nothing to fit.

    logits: float ``N x C``; labels: int64 ``N``. Fitted over log T on a dense grid then refined by
    golden-section search (the NLL is smooth and unimodal in log T), bounded to ``T_RANGE``.
    """
    logits = torch.as_tensor(logits, dtype=torch.float64)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if logits.shape[0] < 2 or len(torch.unique(labels)) < 2:
        return 1.0

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / np.exp(log_t), labels))

    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    grid = np.linspace(lo, hi, 41)
    best = grid[int(np.argmin([nll(g) for g in grid]))]
    a, b = max(lo, best - (hi - lo) / 40), min(hi, best + (hi - lo) / 40)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(c) < nll(d):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))


def reliability_curve(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Dict:
    """Per non-empty bin of confidence (max probability): mean confidence, accuracy and count."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    out = {"confidence": [], "accuracy": [], "count": []}
    if len(y) == 0:
        return out
    conf, correct = p.max(1), (p.argmax(1) == y)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    for b in range(bins):
        sel = idx == b
        if sel.any():
            out["confidence"].append(float(conf[sel].mean()))
            out["accuracy"].append(float(correct[sel].mean()))
            out["count"].append(int(sel.sum()))
    return out


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of ``N x C`` probabilities against int labels: the count-weighted mean of
    |accuracy - confidence| over the bins of :func:`reliability_curve`."""
    c = reliability_curve(probabilities, labels, bins)
    n = sum(c["count"])
    return float(sum(k * abs(a - f) for k, a, f in zip(c["count"], c["accuracy"], c["confidence"])) / n) if n else 0.0


def calibrate(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[float, Dict]:
    """Fit T on held-out logits; return it and the card entry (T, ECE before/after, n)."""
    t = fit_temperature(logits, labels)
    logits = torch.as_tensor(logits, dtype=torch.float64)
    y = np.asarray(labels)
    before = torch.softmax(logits, 1).numpy()
    after = torch.softmax(logits / t, 1).numpy()
    return t, {"method": "temperature scaling on the held-out validation split", "temperature": t,
               "n": int(len(y)), "ece_before": expected_calibration_error(before, y),
               "ece_after": expected_calibration_error(after, y)}


__all__ = ["calibrate", "expected_calibration_error", "fit_temperature", "reliability_curve"]
