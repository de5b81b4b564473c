"""Scoring found particles against outlined ones (instance label images of the same micrograph).

A found particle and an outlined one match when their intersection over union (IoU) is at
least ``threshold`` (0.5 by default, as in COCO's AP50 and the cell-segmentation literature);
at IoU > 0.5 each particle can match at most one other, and the assignment maximising total
IoU (Hungarian, :func:`scipy.optimize.linear_sum_assignment`) is used at any threshold.

**What the errors are.** Each outlined particle left unmatched (a miss) and each found particle
left unmatched (a spurious one) is given one kind, from how the two label images overlap, so a lab
sees whether its finder misses faint particles, merges touching ones, cuts them up or finds things
nobody outlined. With ``cover(a, b)`` the share of ``a``'s pixels inside ``b``, tested in this order:

- a miss is ``merged`` when one found particle holds at least half of it and at least half of another
  outlined particle; ``split`` when two or more found particles each hold at least a fifth of it;
  ``not_found`` when found particles hold less than half of it in all; otherwise ``outline_off``
  (found, but its outline differs too much: IoU under the threshold);
- a spurious particle is a ``merge`` when it holds at least half of two or more outlined particles;
  a ``fragment`` when at least half of it lies inside one outlined particle (a piece of a split
  particle, or a bit beside the found particle matched to it); ``unoutlined`` when less than a fifth
  of it lies on outlined particles (debris, or a particle nobody outlined); otherwise ``outline_off``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

# The kinds of errors (module doc), in the words of reports (find-eval's report and CLI).
MISSED_WORDS = {"not_found": "not found", "merged": "merged with a neighbour", "split": "cut into pieces",
                "outline_off": "outline too far off"}
SPURIOUS_WORDS = {"unoutlined": "where nothing is outlined", "merge": "merging outlined particles",
                  "fragment": "pieces of an outlined particle", "outline_off": "outline too far off"}
MISSED_KINDS = tuple(MISSED_WORDS)
SPURIOUS_KINDS = tuple(SPURIOUS_WORDS)
MOST = 0.5    # "holds at least half of"
SOME = 0.2    # "at least a fifth"


@dataclass
class InstanceMatch:
    """Matches of one micrograph: ``pairs`` (found label, true label, IoU), the counts, and the kind
    of each error (module doc): ``missed_kinds`` outlined label -> kind, ``spurious_kinds`` found
    label -> kind; ``missed`` / ``spurious`` count them by kind."""

    n_found: int
    n_true: int
    pairs: List[tuple] = field(default_factory=list)
    missed_kinds: Dict[int, str] = field(default_factory=dict)
    spurious_kinds: Dict[int, str] = field(default_factory=dict)

    @property
    def missed(self) -> Dict[str, int]:
        return _counted(self.missed_kinds, MISSED_KINDS)

    @property
    def spurious(self) -> Dict[str, int]:
        return _counted(self.spurious_kinds, SPURIOUS_KINDS)

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return self.n_found - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp


def _counted(kinds: Dict[int, str], names: Sequence[str]) -> Dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for kind in kinds.values():
        counts[kind] += 1
    return counts


def _error_kinds(inter: np.ndarray, f_area: np.ndarray, t_area: np.ndarray, matched_f: np.ndarray,
                 matched_t: np.ndarray, f_ids: np.ndarray, t_ids: np.ndarray):
    """(outlined label -> kind of miss, found label -> kind of spurious particle) (module doc), from the
    pixel overlaps ``inter`` (found x outlined, background excluded), the areas, the bool masks of the
    matched found and outlined particles and their labels."""
    t_area = np.maximum(t_area, 1).astype(np.float64)
    f_area = np.maximum(f_area, 1).astype(np.float64)
    holds_most = inter >= MOST * t_area[None, :]          # found i holds at least half of outlined j
    merging = holds_most.sum(1) >= 2                       # found particles holding most of 2+ outlined
    missed = {}
    for j in np.nonzero(~matched_t)[0]:
        cover = inter[:, j] / t_area[j]                    # share of outlined j inside each found particle
        if (holds_most[:, j] & merging).any():
            kind = "merged"
        elif (cover >= SOME).sum() >= 2:
            kind = "split"
        elif cover.sum() < MOST:
            kind = "not_found"
        else:
            kind = "outline_off"
        missed[int(t_ids[j])] = kind
    spurious = {}
    for i in np.nonzero(~matched_f)[0]:
        inside = inter[i] / f_area[i]                      # share of found i inside each outlined particle
        if merging[i]:
            kind = "merge"
        elif (inside >= MOST).any():
            kind = "fragment"
        elif inside.sum() < SOME:
            kind = "unoutlined"
        else:
            kind = "outline_off"
        spurious[int(f_ids[i])] = kind
    return missed, spurious


def match_instances(found: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> InstanceMatch:
    """Match two instance label images (0 = background) of the same shape by IoU; the errors' kinds
    are counted as the module doc says."""
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
    f_area, t_area = f_area[fsel], t_area[tsel]
    union = f_area[:, None] + t_area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    f_ids, t_ids = f_ids[fsel], t_ids[tsel]
    out = InstanceMatch(int(fsel.sum()), int(tsel.sum()))
    matched_f, matched_t = np.zeros(out.n_found, bool), np.zeros(out.n_true, bool)
    if iou.size:
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] >= threshold:
                out.pairs.append((int(f_ids[r]), int(t_ids[c]), float(iou[r, c])))
                matched_f[r] = matched_t[c] = True
    out.missed_kinds, out.spurious_kinds = _error_kinds(inter, f_area, t_area, matched_f, matched_t, f_ids, t_ids)
    return out


def _summed(counts: Sequence[Dict[str, int]], kinds: Sequence[str]) -> Dict[str, int]:
    return {k: int(sum(c.get(k, 0) for c in counts)) for k in kinds}


def summarise(matches: Sequence[InstanceMatch]) -> Dict:
    """Precision, recall, F1, mean IoU of matched particles, count errors over micrographs, and the
    misses and spurious particles by kind (module doc)."""
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
            "count_error_rel_mean": float(np.mean(rel_err)) if rel_err else None,
            "missed_by_kind": _summed([m.missed for m in matches], MISSED_KINDS),
            "spurious_by_kind": _summed([m.spurious for m in matches], SPURIOUS_KINDS)}
