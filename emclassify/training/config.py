"""Training settings and results: :class:`TrainConfig` (recorded in the model card), per-epoch
:class:`EpochLog`, :class:`FitResult`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from torch import nn

from ..defaults import BALANCE_STRATEGIES, TRAIN_DEFAULTS
from ..models import parse_arch


@dataclass
class TrainConfig:
    """Training settings (recorded in the model card).

    lr: AdamW peak learning rate (one-cycle schedule over ``epochs``).
    weight_decay: AdamW decoupled weight decay. label_smoothing: cross-entropy smoothing.
    dropout: None = the architecture's own; else head dropout, with conv dropout half of it.
    patience: epochs without validation macro-F1 improvement before stopping.
    val_fraction: share of the training data held out for early stopping (group-aware).
    """

    # Defaults: emclassify.defaults.TRAIN_DEFAULTS (one source for the CLI, the GUI and the API).
    arch: str = TRAIN_DEFAULTS["arch"]
    epochs: int = TRAIN_DEFAULTS["epochs"]
    batch_size: int = TRAIN_DEFAULTS["batch_size"]
    lr: float = TRAIN_DEFAULTS["lr"]
    weight_decay: float = TRAIN_DEFAULTS["weight_decay"]
    label_smoothing: float = TRAIN_DEFAULTS["label_smoothing"]
    dropout: Optional[float] = TRAIN_DEFAULTS["dropout"]
    patience: int = TRAIN_DEFAULTS["patience"]
    val_fraction: float = TRAIN_DEFAULTS["val_fraction"]
    augment: bool = TRAIN_DEFAULTS["augment"]
    tta: bool = TRAIN_DEFAULTS["tta"]
    balance: str = TRAIN_DEFAULTS["balance"]
    seed: int = TRAIN_DEFAULTS["seed"]
    device: str = TRAIN_DEFAULTS["device"]

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_STRATEGIES:
            raise ValueError(f"unknown balance strategy {self.balance!r}; choose one of {', '.join(BALANCE_STRATEGIES)}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch size >= 2")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError("val_fraction must be in (0, 0.5)")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        parse_arch(self.arch)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochLog:
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_macro_f1: float
    val_accuracy: float
    seconds: float


@dataclass
class FitResult:
    model: nn.Module
    history: List[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "completed"  # completed | early-stopping | interrupted | cancelled
    info: Dict = field(default_factory=dict)
