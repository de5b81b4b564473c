"""Every default setting and named choice in one torch-free module.

The CLI builds its parser from here (so ``emclassify --help`` starts without
importing torch), the GUI's forms read the same values, and the core's config
classes (:class:`emclassify.preprocess.PreprocessConfig`,
:class:`emclassify.training.TrainConfig`) take their defaults from here. Why each
value: BENCHMARKS.md.
"""
from __future__ import annotations

from typing import Dict

# ---- inputs (emclassify.preprocess, emclassify.input_decision)
MODES = ("surround", "crop", "mask")
NORMALIZATIONS = ("zscore", "minmax", "fixed")
AUTO = "auto"
DEFAULT_MODE = AUTO   # decided from the data: emclassify.input_decision
DEFAULT_SIZE = AUTO   # from the particles: emclassify.input_decision, within AUTO_SIZE_RANGE
# "auto" input size: the median region side (the mask's box, the margin crop or the whole image,
# by mode) rounded up to a multiple of 8, within this range (px). Upsampling small particles adds
# no information: on NanoShapes (median box 29 px) 32 px scored 93.2 % in 5.3 min against 92.8 %
# in ~11 min at 48 (BENCHMARKS.md); 48 stays the ceiling (64 was less accurate and 2.4x slower).
# Images all of one square size within the range keep that size (emclassify.input_decision).
AUTO_SIZE_RANGE = (24, 48)
DEFAULT_MARGIN = 50   # px of surrounding the seed's particle images carry
DEFAULT_NORMALIZE = "zscore"

# ---- training (emclassify.training.TrainConfig)
BALANCE_STRATEGIES = ("none", "class-weights", "oversample", "undersample", "synthetic")
TRAIN_DEFAULTS: Dict[str, object] = {
    "arch": AUTO,            # network+SVM ensemble, network alone or SVM alone, by validation; the network
                             # sees the features only where they are informative (emclassify.assess)
    "epochs": AUTO,          # from the training-set size: EPOCH_BUDGET
    "batch_size": 64,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "label_smoothing": 0.05,
    "dropout": None,
    "patience": AUTO,        # a third of the epochs, at least 4: EPOCH_BUDGET
    "val_fraction": 0.15,
    "augment": True,
    "tta": True,             # test-time augmentation (mean over the 8 rotations/reflections)
    "balance": "class-weights",
    "majority_ratio": 0.0,   # 0: every particle every epoch; R: the largest class drawn at most R x all the others
                             # per epoch (emclassify.training). Not the default: at 3 the 14,000-particle CV took
                             # 22 instead of 40 min but lost 0.06 macro-F1 (BENCHMARKS.md)
    "seed": 0,
    "device": "auto",
    "precision": "auto",     # training steps in bf16 autocast on CPUs with native bf16: emclassify.runtime
}
PRECISIONS = ("auto", "float32", "bfloat16")
# How "auto" epochs and patience are chosen (emclassify.training.TrainConfig.resolved): enough epochs
# for a compute budget of ``min_steps`` optimiser steps on ``reference_size`` px inputs -- smaller
# inputs cost less per step and get proportionally more steps (x (reference_size / size)^2) --
# within [min_epochs, max_epochs]; patience a third of them, at least min_patience. Why: the network
# learns per step, not per epoch. 12 epochs were 400 steps on NanoShapes' ~2,100 training particles
# but 160 on 1,200 small texture particles, which left the CNN under-trained (45.7 % vs 53.8 %
# with 28 epochs); and NanoShapes at 32 px reached 94.6 % with the 24 epochs that cost what 12 did
# at 48 px (93.2 % with 12). BENCHMARKS.md, "Data-aware input size and epochs". The budget was
# doubled (360 -> 720 steps, at most 40 -> 48 epochs) once the training steps ran ~2.7x faster:
# NanoShapes' CV 93.8 -> 95.0 % (8.0 instead of 4.2 min), found particles classified end to end 0.861 ->
# 0.873 (BENCHMARKS.md "A doubled epoch budget"). At 48 px, sets of >= ~3,800 training images keep
# 12 epochs (the 14,000-particle CV among them).
# "--arch auto" trains its network with the handcrafted features only where they tell the classes
# apart: the SVM on them (fitted first, the baseline anyway) must get at least this far from chance
# towards perfect balanced accuracy on the validation split, (balanced accuracy - 1/k) / (1 - 1/k);
# below it the network sees the image alone (emclassify.assess). Measured on the pooled CV test
# folds (BENCHMARKS.md): NanoShapes 0.84 (the fusion beats the CNN alone); texture-defined classes
# 0.20 (the fusion lost 1.7 points to the CNN alone), the seed's lamellarity mix at 1,500 0.31 (the
# CNN alone scored 93.4 % / 0.561 against the fusion's 92.4 % / 0.552), 300 particles 0.25.
AUTO_FEATURES_INFORMATIVE = 0.5
EPOCH_BUDGET = {"min_steps": 720, "reference_size": 48, "min_epochs": 12, "max_epochs": 48, "min_patience": 4}
DEFAULT_FOLDS = 5
# Architecture names for help texts; tests hold it equal to emclassify.models.list_archs().
ARCH_NAMES = ("auto", "lipnet1", "lipnet2", "lipnet3", "lipnet4", "lipnet5", "lipnet-fcn", "svm",
              "<cnn>+features", "lipnet-fcn+features+svm")

# ---- finding particles in micrographs (emclassify.finding); tests hold it equal to its registry
FINDER_NAMES = ("classical", "learned")
# Particles darker than their surroundings (bright-field TEM, cryo-EM) or brighter (negative stain, dark field).
POLARITIES = ("dark", "bright")
DEFAULT_FINDER = "classical"
# Surround of a found particle cut out to train a classifier (find-eval --train-classifier), as a
# share of the particles' median diameter: NanoShapes' curated crops hold 11 px around 29 px boxes.
FOUND_CROP_CONTEXT_SHARE = 0.4
# How the learned finder is trained (emclassify.finding.training.FinderTrainSettings reads these):
# measured on NanoShapes micrographs, BENCHMARKS.md "The learned finder". val_fraction 0: every
# outlined micrograph trains the network and the thresholds stay at 0.5 / 0.5. Holding out 20 % to
# choose the seed threshold chose 0.5 in 4 of 5 folds and cost the network a fifth of its few
# micrographs: training on all raised NanoShapes' 5-fold F1 from 0.887 to 0.902 (IoU 0.847 -> 0.843).
# How well a finder finds is measured by `find-eval --folds` instead.
# 1,600 steps instead of 800 (the loss still fell at 800): 5-fold F1 0.902 -> 0.927, IoU 0.843 -> 0.857,
# end to end 0.838 -> 0.858, better in every fold, for ~14 instead of ~7 min of training on 2 cores.
# After training, the centre-ness peak an object must reach is chosen on the micrographs
# (finding.training.choose_peak_threshold): 5-fold F1 0.927 -> 0.931, end to end 0.858 -> 0.867.
# The learned finder's maps as the network gives them (1) or averaged over the micrograph's 8
# rotations and reflections (8: 7.7x the finder's time; with 800 training steps 5-fold mean IoU
# 0.8425 -> 0.8497 on NanoShapes, with 1,600 only +0.001 on fold 4; BENCHMARKS.md "The learned finder").
FINDER_VIEWS = (1, 8)
FINDER_TRAINING = {"steps": 1600, "batch": 8, "crop": 192, "learning_rate": 3e-3, "weight_decay": 1e-4,
                   "widths": (16, 32, 64, 128), "val_fraction": 0.0, "seed": 0, "device": "auto",
                   # auto: bf16 steps on a CPU with native bf16 (1.6x the steps/s); the 5-fold finder CV
                   # found and classified as well as in float32, fold by fold (BENCHMARKS.md)
                   "precision": "auto"}

# ---- batch (emclassify.batch)
DEFAULT_BATCH_SIZE = 64
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOME_ERRORS = 3
EXIT_NOTHING_RAN = 4
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "all files classified",
    EXIT_USAGE: "usage error (an option's value)",
    EXIT_SOME_ERRORS: "some files could not be classified (status=error rows in the CSV)",
    EXIT_NOTHING_RAN: "nothing could run (bad model, missing or empty folder, unusable or locked output, "
                      "record of another model or folder)",
    EXIT_INTERRUPTED: "interrupted; the results so far were written (use --resume to continue)",
}
