"""Class-imbalance strategies (see :mod:`emclassify.training`): loss weights, per-epoch sample
order, synthetic top-up of minority classes."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

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


@dataclass(frozen=True)
class EpochPlan:
    """How many particles one epoch draws, per class.

    counts: particles of each class in the training part; draws: how many of them an epoch uses
    (``None`` for ``oversample``, whose per-class draws are random); size: particles per epoch.
    loss_factor: per-class float32 factors (``counts / draws``) the loss weights are multiplied by so
    that the expected loss of a capped epoch is that of the full one; all ones when nothing is capped.
    capped: the class whose draws were capped (index), or None.
    """

    counts: Tuple[int, ...]
    draws: Optional[Tuple[int, ...]]
    size: int
    capped: Optional[int] = None

    @property
    def loss_factor(self) -> torch.Tensor:
        if self.capped is None:
            return torch.ones(len(self.counts))
        return torch.tensor([c / d if d else 1.0 for c, d in zip(self.counts, self.draws)], dtype=torch.float32)

    def describe(self, classes: Sequence[str]) -> Optional[str]:
        """One line for the card and the report when the plan caps a class, else None."""
        if self.capped is None:
            return None
        c = self.capped
        return (f"each epoch drew a fresh {self.draws[c]:,} of the {self.counts[c]:,} {classes[c]} particles "
                f"and every particle of the other classes ({self.size - self.draws[c]:,}); {classes[c]}'s loss "
                f"weight x{self.counts[c] / self.draws[c]:.2f} keeps the expected loss of a full epoch")


def epoch_plan(y: torch.Tensor, n_classes: int, balance: str, majority_ratio: float = 0.0,
               min_size: int = 0) -> EpochPlan:
    """The per-epoch draws of the balance strategy (see module doc) for labels ``y`` (int64, N).

    majority_ratio > 0 (``class-weights``, ``none``, ``synthetic``): a class larger than
    ``majority_ratio`` times all the others together (at most one can be, for a ratio >= 1) is drawn
    at that many per epoch, but never so few that the epoch falls under ``min_size`` particles.
    """
    counts = tuple(int(c) for c in torch.bincount(y, minlength=n_classes))
    n = sum(counts)
    if balance == "oversample":
        return EpochPlan(counts, None, n)
    if balance == "undersample":
        m = min(c for c in counts if c) if n else 0
        draws = tuple(min(c, m) for c in counts)
        return EpochPlan(counts, draws, sum(draws))
    if majority_ratio > 0 and n:
        big = max(range(n_classes), key=lambda c: counts[c])
        rest = n - counts[big]
        cap = max(math.ceil(majority_ratio * rest), min_size - rest, 1)
        if rest and cap < counts[big]:
            draws = tuple(cap if c == big else counts[c] for c in range(n_classes))
            return EpochPlan(counts, draws, sum(draws), capped=big)
    return EpochPlan(counts, counts, n)


def epoch_indices(y: torch.Tensor, n_classes: int, balance: str, gen: torch.Generator,
                  plan: Optional[EpochPlan] = None) -> torch.Tensor:
    """Sample order for one epoch under the balance strategy and ``plan`` (default: the strategy's
    own, :func:`epoch_plan` without a cap): int64 indices into ``y``, shuffled."""
    plan = plan or epoch_plan(y, n_classes, balance)
    n = y.shape[0]
    if balance == "oversample":
        w = class_weights(y, n_classes, power=1.0)[y].double()  # every class drawn equally often
        return torch.multinomial(w, n, replacement=True, generator=gen)
    if plan.size == n:
        return torch.randperm(n, generator=gen)
    parts = []
    for c in range(n_classes):
        idx = torch.nonzero(y == c).flatten()
        if idx.numel() and plan.draws[c]:
            parts.append(idx[torch.randperm(idx.numel(), generator=gen)[:plan.draws[c]]])
    sel = torch.cat(parts)
    return sel[torch.randperm(sel.numel(), generator=gen)]


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
