"""Class-imbalance strategies (see :mod:`emclassify.training`): loss weights, per-epoch sample
order, synthetic top-up of minority classes."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .. import ops
from ..features import particle_features
from ..preprocess import PreprocessConfig
from .augment import augment
from .inputs import InputSet

SYNTHETIC_MAX_FACTOR = 5


# Loss weights follow 1 / sqrt(class frequency), not 1 / frequency: at the seed's lamellarity mix
# (87 / 12 / 0.6 %) full inverse-frequency weights are 145x apart, the 9 rare examples dominated the
# loss and the CNN called almost every particle by the rarest class (4-6 % accuracy, BENCHMARKS.md).
CLASS_WEIGHT_POWER = 0.5


def class_weights(y: torch.Tensor, n_classes: int, power: float = CLASS_WEIGHT_POWER) -> torch.Tensor:
    """Weights proportional to ``1 / frequency**power`` (absent classes weight 0), scaled so the
    average weight over the *samples* is 1 (the loss keeps its unweighted scale)."""
    counts = torch.bincount(y, minlength=n_classes).double()
    present = counts > 0
    w = torch.where(present, counts.clamp_min(1) ** -power, torch.zeros_like(counts))
    return (w * counts.sum() / (w * counts).sum()).float()


def epoch_indices(y: torch.Tensor, n_classes: int, balance: str, gen: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch under the balance strategy (see module doc)."""
    n = y.shape[0]
    if balance == "oversample":
        w = class_weights(y, n_classes, power=1.0)[y].double()  # every class drawn equally often
        return torch.multinomial(w, n, replacement=True, generator=gen)
    if balance == "undersample":
        counts = torch.bincount(y, minlength=n_classes)
        m = int(counts[counts > 0].min())
        parts = []
        for c in range(n_classes):
            idx = torch.nonzero(y == c).flatten()
            if idx.numel():
                parts.append(idx[torch.randperm(idx.numel(), generator=gen)[:m]])
        sel = torch.cat(parts)
        return sel[torch.randperm(sel.numel(), generator=gen)]
    return torch.randperm(n, generator=gen)


def synthetic_topup(data: InputSet, classes: Sequence[str], cfg: PreprocessConfig, seed: int,
                    want_features: bool) -> InputSet:
    """Add synthetic minority samples (see module doc); returns a new InputSet (training use only)."""
    from .. import synth

    y = data.labels
    counts = torch.bincount(y, minlength=len(classes))
    target = int(counts.max())
    problem = next((p for p, (names, _) in synth.PROBLEMS.items() if set(classes) <= set(names)), None)
    gen = torch.Generator().manual_seed(seed + 7919)
    new_x, new_f, new_y = [], [], []
    for c, name in enumerate(classes):
        have = int(counts[c])
        need = min(target, SYNTHETIC_MAX_FACTOR * have) - have if have else 0
        if need <= 0:
            continue
        if problem is not None:
            rendered = [synth.render(problem, name, seed + 104729, 10_000_000 * (c + 1) + i) for i in range(need)]
            new_x.append(ops.preprocess([r[0] for r in rendered], [r[1] for r in rendered], cfg))
            if want_features:
                new_f.append(np.stack([particle_features(r[0], r[1]) for r in rendered]))
        else:
            idx = torch.nonzero(y == c).flatten()
            pick = idx[torch.randint(0, idx.numel(), (need,), generator=gen)]
            new_x.append(augment(data.x[pick], gen, strong=True))
            if want_features:
                new_f.append(data.features[pick.numpy()])
        new_y.append(torch.full((need,), c, dtype=torch.int64))
    if not new_y:
        return data
    feats = np.concatenate([data.features] + new_f) if want_features else None
    return InputSet(torch.cat([data.x] + new_x), feats, torch.cat([y] + new_y), data.samples, data.errors)
