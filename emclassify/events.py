"""Progress events: one typed protocol for batch, train, cv and compare.

Every long-running core call takes ``progress: Callable[[Event], None]`` and reports
these frozen dataclasses through it, in order. The CLI prints them, the GUI's
worker threads forward them to the view, a notebook can collect them; nobody
unpacks tuples or compares event-name strings. Torch-free.

Remaining time (:class:`RemainingTime`) is computed here, once, from the epochs
measured so far, so the CLI and the GUI state the same figure from the first
epoch on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union


@dataclass(frozen=True)
class Decoding:
    """Images decoded and preprocessed so far (before training or cross-validation)."""

    done: int
    total: int


@dataclass(frozen=True)
class FoldStarted:
    """A cross-validation fold begins. fold: 0-based; arch: the architecture being validated."""

    arch: str
    fold: int
    folds: int


@dataclass(frozen=True)
class EpochEnded:
    """One training epoch ended.

    log: :class:`emclassify.training.EpochLog`. fold/folds: None outside cross-validation.
    remaining_s: estimated seconds until the whole call ends if no run stops early (an upper
    estimate: early stopping ends sooner), None when it cannot be estimated yet.
    """

    arch: str
    log: Any
    fold: Optional[int] = None
    folds: Optional[int] = None
    remaining_s: Optional[float] = None


@dataclass(frozen=True)
class FoldEnded:
    """A fold's test part was predicted. metrics: :func:`emclassify.metrics.summary` of the fold."""

    arch: str
    fold: int
    folds: int
    metrics: Dict


@dataclass(frozen=True)
class BatchStarted:
    """``emclassify batch`` is about to classify. run: the :class:`emclassify.batch.BatchRun`
    (its classes, folder and model); total: files to classify in this call."""

    run: Any
    total: int


@dataclass(frozen=True)
class BatchClassified:
    """A batch of files was classified (``emclassify batch``). batch: :class:`emclassify.inference.BatchResult`
    (its results, files done/total, rate in images/s, eta in s)."""

    batch: Any


@dataclass(frozen=True)
class FinderStep:
    """Particle-finder training made ``step`` of ``steps`` optimisation steps (``train-finder``).

    loss: mean training loss since the last event. fold/folds: set in ``find-eval --folds``.
    remaining_s: estimated seconds left in the whole call (None until measurable).
    """

    step: int
    steps: int
    loss: float
    fold: Optional[int] = None
    folds: Optional[int] = None
    remaining_s: Optional[float] = None


@dataclass(frozen=True)
class FinderFoldEnded:
    """A fold of ``find-eval --folds`` was scored (its figures, so a long run shows them as it goes).

    row: that fold's record as in the result's ``per_fold`` (held-out micrographs, thresholds,
    each finder's overall scores and end-to-end macro-F1 per classifier, under the keys ``finders``).
    fold: 0-based.
    """

    fold: int
    folds: int
    finders: Tuple[str, ...]
    row: Dict


Event = Union[Decoding, FoldStarted, EpochEnded, FoldEnded, BatchStarted, BatchClassified, FinderStep, FinderFoldEnded]
Progress = Callable[[Event], None]


def emit(progress: Optional[Progress], event: Event) -> None:
    """Report ``event`` when someone listens."""
    if progress is not None:
        progress(event)


class RemainingTime:
    """Seconds left in a call made of ``runs`` trainings (folds x architectures) of at most ``epochs`` each.

    The estimate is the measured mean epoch time times the epochs still allowed, plus the
    measured time each finished run spent outside its epochs (fitting baselines, predicting the
    test part) for every run still to come. It assumes no early stopping, so it only errs high.
    """

    def __init__(self, runs: int, epochs: int, clock: Callable[[], float] = time.perf_counter):
        self.runs, self.epochs, self.clock = max(1, runs), max(1, epochs), clock
        self.epoch_seconds = 0.0
        self.epochs_seen = 0
        self.runs_done = 0
        self.overhead_seconds = 0.0
        self._run_started: Optional[float] = None
        self._run_epoch_seconds = 0.0
        self._run_epochs = 0

    def run_started(self) -> None:
        self._run_started, self._run_epoch_seconds, self._run_epochs = self.clock(), 0.0, 0

    def epoch_ended(self, seconds: float) -> Optional[float]:
        """Record one epoch; return the estimate of the seconds left."""
        self.epoch_seconds += seconds
        self.epochs_seen += 1
        self._run_epoch_seconds += seconds
        self._run_epochs += 1
        return self.remaining()

    def run_ended(self) -> None:
        if self._run_started is not None:
            self.overhead_seconds += max(0.0, self.clock() - self._run_started - self._run_epoch_seconds)
        self.runs_done += 1
        self._run_started = None
        self._run_epochs = 0

    def remaining(self) -> Optional[float]:
        if not self.epochs_seen:
            return None
        per_epoch = self.epoch_seconds / self.epochs_seen
        running = self._run_started is not None
        runs_after = max(0, self.runs - self.runs_done - (1 if running else 0))
        epochs_left = (max(0, self.epochs - self._run_epochs) if running else 0) + runs_after * self.epochs
        per_run_overhead = self.overhead_seconds / self.runs_done if self.runs_done else 0.0
        return epochs_left * per_epoch + runs_after * per_run_overhead


def format_seconds(seconds: Optional[float]) -> str:
    """``"--"``, ``"45 s"``, ``"12 min"`` or ``"1 h 05 min"``."""
    if seconds is None:
        return "--"
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    m = int(round(s / 60))
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60:02d} min"


__all__ = ["BatchClassified", "BatchStarted", "Decoding", "EpochEnded", "Event", "FinderStep", "FoldEnded", "FoldStarted", "Progress",
           "RemainingTime", "emit", "format_seconds"]
