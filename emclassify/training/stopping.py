"""Which epoch a fit keeps, and when it stops: early stopping on a smoothed validation score."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence


def smoothed_score(scores: Sequence[float], epoch: int) -> float:
    """The mean score of ``epoch`` (1-based) and its neighbours among ``scores`` (one per epoch so
    far); NaN scores (nothing to validate on) count as 0."""
    window = scores[max(0, epoch - 2) : min(len(scores), epoch + 1)]
    return sum(0.0 if math.isnan(s) else s for s in window) / len(window)


def late_gain(scores: Sequence[float], window: int) -> Optional[float]:
    """How far the last epoch's smoothed score rose above the best smoothed score of the epochs at
    least ``window`` epochs before it (a fit's patience): large when a fit that ran to its last epoch
    was still improving, ~0 or negative when it had levelled off. None when no epoch is that early."""
    last = len(scores)
    early = [smoothed_score(scores, e) for e in range(1, last - window + 1)]
    return smoothed_score(scores, last) - max(early) if early else None


class EpochSelector:
    """Keeps the epoch whose validation score, averaged with its neighbours' (the epochs just before
    and after it), is best, and says when ``patience`` epochs have passed without a better one.

    Why smoothed: with a rare class of ~17 validation particles (the seed's 0.6 % class in a
    14,000-particle set), one or two of them flip macro-F1 by 0.05 from one epoch to the next. The
    plain maximum kept such a one-epoch jump: one fold of the 14,000-particle CV stopped at epoch 7
    with epoch 3's weights while its validation loss kept falling (BENCHMARKS.md "Fifth round").
    An epoch's neighbours see nearly the same network, so their mean is a less noisy estimate of
    how good the network is around it.

    Use: :meth:`add` after each epoch's validation, then :meth:`should_stop`; :meth:`finish` at the
    end (also after a cancel). An epoch's score is final once the next epoch is in (the last
    epoch's averages it with the one before it), so stopping comes one epoch later than with the
    plain maximum. ``state`` is anything (a model's copied state dict); the selector keeps the last
    one and the best one.
    """

    def __init__(self, patience: int, tol: float = 1e-9):
        self.patience = int(patience)
        self.tol = tol
        self.scores: List[float] = []
        self.best_epoch = 0          # 1-based; 0 until an epoch's score is final
        self.best_score = -math.inf  # its smoothed score
        self.best_state: Any = None
        self._last_state: Any = None

    def smoothed(self, epoch: int) -> float:
        """:func:`smoothed_score` of ``epoch`` (1-based) among the epochs added so far."""
        return smoothed_score(self.scores, epoch)

    def add(self, score: float, state: Any) -> None:
        """Record the epoch just validated (its ``score``, and ``state`` to keep if it wins); the
        epoch before it now has both neighbours and its smoothed score is final."""
        self.scores.append(float(score))
        if len(self.scores) > 1:
            self._consider(len(self.scores) - 1, self._last_state)
        self._last_state = state

    def should_stop(self) -> bool:
        """Whether ``patience`` epochs with a final score have passed since the best one."""
        final = len(self.scores) - 1
        return self.best_epoch > 0 and final - self.best_epoch >= self.patience

    def finish(self) -> Optional[Any]:
        """Settle the last epoch (averaged with the one before it) and return the best epoch's state
        (None when no epoch was added)."""
        if self._last_state is not None:
            self._consider(len(self.scores), self._last_state)
            self._last_state = None
        return self.best_state

    def _consider(self, epoch: int, state: Any) -> None:
        score = self.smoothed(epoch)
        if score > self.best_score + self.tol:
            self.best_epoch, self.best_score, self.best_state = epoch, score, state


__all__ = ["EpochSelector", "late_gain", "smoothed_score"]
