"""The validation split of ``train`` and of every CV fold: stratified, group-aware when every sample
has a group."""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

import numpy as np


def quiet_splits(splitter, *arrays) -> List:
    """``list(splitter.split(*arrays))`` without scikit-learn's "least populated class has only n
    members" warning: emclassify reports rare classes itself (the ``few-examples`` flag), and a raw
    library warning on stderr only confuses. The splitters warn while being iterated, so the splits
    are listed inside the filter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(*arrays))


def holdout_split(labels: np.ndarray, groups: Optional[Sequence], fraction: float, seed: int):
    """Stratified (and group-aware when groups are given) train/validation index split."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    n_splits = max(2, int(round(1 / fraction)))
    min_count = int(np.bincount(labels).min()) if len(labels) else 0
    n_groups = len(set(groups)) if groups is not None and all(g is not None for g in groups) else 0
    if n_groups >= 2:
        # Few groups: a larger validation share, but never a group on both sides.
        splitter = StratifiedGroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed)
        train_idx, val_idx = quiet_splits(splitter, np.zeros(len(labels)), labels, np.asarray(groups))[0]
    elif min_count >= 2:
        splitter = StratifiedKFold(n_splits=min(n_splits, min_count), shuffle=True, random_state=seed)
        train_idx, val_idx = quiet_splits(splitter, np.zeros(len(labels)), labels)[0]
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(labels))
        cut = max(1, int(round(fraction * len(labels))))
        val_idx, train_idx = np.sort(perm[:cut]), np.sort(perm[cut:])
    return np.sort(train_idx), np.sort(val_idx)
