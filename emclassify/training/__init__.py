"""Training a model: images decoded and preprocessed once, then epochs on tensors.

- :func:`load_inputs`: dataset samples -> :class:`InputSet` (float32 ``N x 1 x S x S``
  inputs, optional handcrafted features, labels, groups); bad files are skipped
  with their reason, never a crash.
- :func:`fit`: a LipNet or ``<lipnet>+features`` fusion, with augmentation,
  class-imbalance handling, weight decay, label smoothing, dropout and early
  stopping on a validation split, restoring the epoch whose validation macro-F1,
  averaged with its neighbours', is best (:class:`EpochSelector`).
- :func:`fit_model`: any architecture (including ``svm``) on an InputSet split.
- :func:`train`: the whole of ``emclassify train`` (split, fit, card, save).

Balance strategies (``TrainConfig.balance``), applied to the training split only:

- ``none``: the data as it is.
- ``class-weights``: loss weights proportional to 1 / sqrt(class frequency), sample mean 1.
- ``oversample``: each epoch samples with probability proportional to 1 / class
  frequency (epoch size unchanged), so classes are drawn equally often.
- ``undersample``: each epoch draws every class down to the rarest class's count.
- ``synthetic``: minority classes are topped up with new samples until each has
  as many as the majority class (at most 5x its real count): for liposome class
  names (:data:`emclassify.synth.PROBLEMS`) new particles from the synthetic
  generator, otherwise strongly augmented copies (any-angle rotation, scale 0.8–1.2,
  flips, intensity, noise) of that class's real samples.

Large, imbalanced sets (``none``, ``class-weights`` and ``synthetic``): an epoch draws
every particle of the smaller classes but a class larger than ``TrainConfig.majority_ratio``
times all the others together only that many times them (a fresh random subset each
epoch), never fewer particles than keep ``auto``'s step budget at its epoch floor; its
loss weight rises by the same factor, so the expected loss is that of a full epoch
(:func:`epoch_plan`). Why: the minority classes still pass ``min_epochs`` times, the
common class costs less (BENCHMARKS.md, "A 14,000-particle cross-validation").
"""
from __future__ import annotations

from ..defaults import BALANCE_STRATEGIES, TRAIN_DEFAULTS
from .augment import augment
from .balance import (CLASS_WEIGHT_POWER, SYNTHETIC_MAX_FACTOR, EpochPlan, class_weights, epoch_indices, epoch_plan,
                      synthetic_topup)
from .config import EpochLog, FitResult, TrainConfig
from .stopping import EpochSelector
from .fit import (PRECISE_BN_SAMPLES, TRAIN_MEMORY_FORMAT, fit, fit_ensemble, fit_model, fit_subsampled_svm,
                  predict_logits, predict_views, recalibrate_batchnorm)
from .inputs import InputSet, TooSmallError, load_inputs, refuse_too_small
from .splits import holdout_split
from .train import TrainOutcome, train

__all__ = ["BALANCE_STRATEGIES", "CLASS_WEIGHT_POWER", "PRECISE_BN_SAMPLES", "SYNTHETIC_MAX_FACTOR", "TRAIN_DEFAULTS",
           "TRAIN_MEMORY_FORMAT", "EpochLog", "EpochPlan", "FitResult", "InputSet", "TooSmallError", "TrainConfig", "TrainOutcome",
           "augment", "class_weights", "epoch_indices", "epoch_plan", "fit", "fit_ensemble", "fit_model", "fit_subsampled_svm",
           "EpochSelector", "holdout_split", "load_inputs", "predict_logits", "predict_views", "recalibrate_batchnorm", "refuse_too_small",
           "synthetic_topup", "train"]
