"""Training settings and results: :class:`TrainConfig` (recorded in the model card), per-epoch
:class:`EpochLog`, :class:`FitResult`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Dict, List, Optional, Union

import torch
from torch import nn

from ..defaults import AUTO, BALANCE_STRATEGIES, EPOCH_BUDGET, TRAIN_DEFAULTS
from ..models import parse_arch
from ..runtime import check_precision

if TYPE_CHECKING:
    from .balance import EpochPlan


@dataclass
class TrainConfig:
    """Training settings (recorded in the model card).

    lr: AdamW peak learning rate (one-cycle schedule over ``epochs``).
    weight_decay: AdamW decoupled weight decay. label_smoothing: cross-entropy smoothing.
    dropout: None = the architecture's own; else head dropout, with conv dropout half of it.
    epochs: maximum epochs, or ``"auto"``: chosen from the training-set size by :meth:`resolved`.
    patience: epochs without improvement of the validation macro-F1 averaged with its neighbouring
        epochs' (:class:`~emclassify.training.stopping.EpochSelector`) before stopping, or ``"auto"``.
    val_fraction: share of the training data held out for early stopping (group-aware).
    majority_ratio: per epoch, a class larger than this many times all the others together is drawn
        at that many (a fresh subset each epoch, its loss weight scaled up to match), never under
        :meth:`min_epoch_size` particles; 0 = every particle every epoch (``class-weights``, ``none``,
        ``synthetic``; see :mod:`emclassify.training`).
    precision: ``auto``, ``float32`` or ``bfloat16``: the dtype of the training steps' forward pass
        (autocast; weights, optimiser and batch-norm statistics stay float32, predictions are float32):
        ``auto`` is bfloat16 on a CPU with native bf16, float32 elsewhere
        (:func:`emclassify.runtime.training_autocast_dtype`).
    epoch_decision: how :meth:`resolved` chose ``auto`` epochs/patience (recorded in card and report).
    """

    # Defaults: emclassify.defaults.TRAIN_DEFAULTS (one source for the CLI, the GUI and the API).
    arch: str = TRAIN_DEFAULTS["arch"]
    epochs: Union[int, str] = TRAIN_DEFAULTS["epochs"]
    batch_size: int = TRAIN_DEFAULTS["batch_size"]
    lr: float = TRAIN_DEFAULTS["lr"]
    weight_decay: float = TRAIN_DEFAULTS["weight_decay"]
    label_smoothing: float = TRAIN_DEFAULTS["label_smoothing"]
    dropout: Optional[float] = TRAIN_DEFAULTS["dropout"]
    patience: Union[int, str] = TRAIN_DEFAULTS["patience"]
    val_fraction: float = TRAIN_DEFAULTS["val_fraction"]
    augment: bool = TRAIN_DEFAULTS["augment"]
    tta: bool = TRAIN_DEFAULTS["tta"]
    balance: str = TRAIN_DEFAULTS["balance"]
    majority_ratio: float = TRAIN_DEFAULTS["majority_ratio"]
    seed: int = TRAIN_DEFAULTS["seed"]
    device: str = TRAIN_DEFAULTS["device"]
    precision: str = TRAIN_DEFAULTS["precision"]
    epoch_decision: Optional[str] = None

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_STRATEGIES:
            raise ValueError(f"unknown balance strategy {self.balance!r}; choose one of {', '.join(BALANCE_STRATEGIES)}")
        for name in ("epochs", "patience"):
            value = getattr(self, name)
            if value != AUTO and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1 or 'auto', got {value!r}")
        check_precision(self.precision)
        if self.batch_size < 2:
            raise ValueError("batch size must be >= 2")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError("val_fraction must be in (0, 0.5)")
        if isinstance(self.majority_ratio, bool) or not isinstance(self.majority_ratio, (int, float)) \
                or not (self.majority_ratio == 0 or 1.0 <= self.majority_ratio < math.inf):
            raise ValueError(f"majority_ratio must be 0 (off) or a number >= 1, got {self.majority_ratio!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        parse_arch(self.arch)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_resolved(self) -> bool:
        return self.epochs != AUTO and self.patience != AUTO

    def step_budget(self, input_size: int) -> int:
        """Optimiser steps ``auto`` epochs aim for on ``input_size`` px inputs (``EPOCH_BUDGET``)."""
        b = EPOCH_BUDGET
        return math.ceil(b["min_steps"] * (b["reference_size"] / max(1, input_size)) ** 2)

    def min_epoch_size(self, input_size: int) -> int:
        """Fewest particles a capped epoch may hold (:attr:`majority_ratio`): enough batches that the
        epoch floor ``EPOCH_BUDGET["min_epochs"]`` still makes :meth:`step_budget` steps, so a cap never
        changes how many epochs ``auto`` chooses."""
        return math.ceil(self.step_budget(input_size) / EPOCH_BUDGET["min_epochs"]) * self.batch_size

    def resolved(self, n_train: int, input_size: int) -> "TrainConfig":
        """A copy with ``auto`` epochs and patience made concrete for ``n_train`` training images of
        ``input_size`` px.

        Epochs: enough for a compute budget of ``EPOCH_BUDGET["min_steps"]`` optimiser steps of
        ``batch_size`` images at ``reference_size`` px -- ``(reference_size / input_size)^2`` times
        as many steps for smaller inputs -- clamped to ``[min_epochs, max_epochs]``; patience: a
        third of the epochs, at least ``min_patience``. Numbers given explicitly are kept. Idempotent.
        """
        if self.is_resolved:
            return self
        b = EPOCH_BUDGET
        steps = max(1, math.ceil(max(1, n_train) / self.batch_size))
        budget = self.step_budget(input_size)
        epochs = self.epochs
        why = []
        if epochs == AUTO:
            epochs = min(b["max_epochs"], max(b["min_epochs"], math.ceil(budget / steps)))
            scaled = (f" ({b['min_steps']} at {b['reference_size']} px, scaled to {input_size} px inputs)"
                      if input_size != b["reference_size"] else f" (for {input_size} px inputs)")
            why.append(f"{epochs} epochs: at least {budget} optimiser steps{scaled} at {steps} per epoch "
                       f"({n_train} training images, batch {self.batch_size}), within {b['min_epochs']}-{b['max_epochs']}")
        patience = self.patience
        if patience == AUTO:
            patience = max(b["min_patience"], math.ceil(epochs / 3))
            why.append(f"patience {patience}: a third of the epochs, at least {b['min_patience']}")
        return replace(self, epochs=int(epochs), patience=int(patience), epoch_decision="auto: " + "; ".join(why))


@dataclass
class EpochLog:
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_macro_f1: float
    val_accuracy: float
    seconds: float
    lr: float = float("nan")  # learning rate the schedule had reached at the epoch's end


@dataclass
class FitResult:
    model: nn.Module
    history: List[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "completed"  # completed | early-stopping | interrupted | cancelled
    info: Dict = field(default_factory=dict)
    # What each epoch drew per class (a network's fit; None for the SVM): the card and the CV report
    # say so when a large class was capped (TrainConfig.majority_ratio).
    epoch_plan: Optional["EpochPlan"] = None
    # The dtype the training steps ran in ("float32" or "bfloat16"), as TrainConfig.precision resolved.
    precision: str = "float32"

    def epoch_plan_note(self, classes) -> Optional[str]:
        """How the epochs drew a capped class, in words (None when every particle was drawn)."""
        return self.epoch_plan.describe(classes) if self.epoch_plan is not None else None
    # An ensemble's network on the validation part, float32 V x N x C (one per D4 view), when the fit
    # computed it (to calibrate the network): the assessment reuses it instead of running it again.
    net_val_views: Optional[torch.Tensor] = field(default=None, repr=False)
    # The validation images (N x 1 x H x W) those views were computed from: the assessment reuses the
    # views only for this very tensor, never for another set that merely has the same length.
    net_val_x: Optional[torch.Tensor] = field(default=None, repr=False)
