"""Scoring found particles against outlined ones (instance label images of the same micrograph).

A found particle and an outlined one match when their intersection over union (IoU) is at
least ``threshold`` (0.5 by default, as in COCO's AP50 and the cell-segmentation literature);
at IoU > 0.5 each particle can match at most one other, and the assignment maximising total
IoU (Hungarian, :func:`scipy.optimize.linear_sum_assignment`) is used at any threshold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class InstanceMatch:
    """Matches of one micrograph: ``pairs`` (found label, true label, IoU) and the counts."""

    n_found: int
    n_true: int
    pairs: List[tuple] = field(default_factory=list)

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return self.n_found - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp


def match_instances(found: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> InstanceMatch:
    """Match two instance label images (0 = background) of the same shape by IoU."""
    found = np.asarray(found)
    true = np.asarray(true)
    if found.shape != true.shape:
        raise ValueError(f"label images differ in shape: {found.shape} vs {true.shape}")
    f_ids, f = np.unique(found, return_inverse=True)
    t_ids, t = np.unique(true, return_inverse=True)
    f, t = f.ravel(), t.ravel()
    inter = np.bincount(f * len(t_ids) + t, minlength=len(f_ids) * len(t_ids)).reshape(len(f_ids), len(t_ids))
    f_area, t_area = inter.sum(1), inter.sum(0)
    fsel = f_ids != 0
    tsel = t_ids != 0
    inter = inter[np.ix_(fsel, tsel)].astype(np.float64)
    union = f_area[fsel][:, None] + t_area[tsel][None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    out = InstanceMatch(int(fsel.sum()), int(tsel.sum()))
    if iou.size:
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] >= threshold:
                out.pairs.append((int(f_ids[fsel][r]), int(t_ids[tsel][c]), float(iou[r, c])))
    return out


def summarise(matches: Sequence[InstanceMatch]) -> Dict:
    """Precision, recall, F1, mean IoU of matched particles and count errors over micrographs."""
    tp = sum(m.tp for m in matches)
    fp = sum(m.fp for m in matches)
    fn = sum(m.fn for m in matches)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ious = [p[2] for m in matches for p in m.pairs]
    count_err = [m.n_found - m.n_true for m in matches]
    rel_err = [abs(m.n_found - m.n_true) / m.n_true for m in matches if m.n_true]
    return {"micrographs": len(matches), "true": tp + fn, "found": tp + fp, "matched": tp,
            "precision": precision, "recall": recall, "f1": f1,
            "mean_iou": float(np.mean(ious)) if ious else None,
            "count_error_mean": float(np.mean(count_err)) if count_err else None,
            "count_error_abs_mean": float(np.mean(np.abs(count_err))) if count_err else None,
            "count_error_rel_mean": float(np.mean(rel_err)) if rel_err else None}
