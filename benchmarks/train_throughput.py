"""Training throughput, recipes side by side in one run (BENCHMARKS.md "Training throughput").

    python benchmarks/train_throughput.py [DATASET] [--epochs 4] [--arch lipnet-fcn+features] [--size 48]
                                          [--json out.json]

DATASET defaults to ../shared/data/nanoshapes. The inputs are decoded and preprocessed once; every
recipe then trains the same architecture on the same split (fold 1 of the group-aware 5-fold CV,
its inner training part) for the same number of epochs with early stopping off, and is timed over
the whole epoch (augmentation, the training steps, batch-norm recalibration, validation), so
"images/s" is training images per second of an epoch as a user waits for it. The recipes alternate
(A B A B ...) so drift of the machine's speed falls on both.

Recipes (``emclassify.training.fit`` keywords):
- ``nchw-bn1024``: the recipe before this harness (contiguous tensors, 1,024 recalibration images,
  ATen's batch-norm, ReLU and dropout: the native training ops take channels-last tensors only);
- ``channels-last``: channels-last tensors, 1,024 recalibration images, ATen's layers;
- ``channels-last-bn512-aten``: channels-last, 512 recalibration images, float32 steps, ATen's layers;
- ``channels-last-bn512``: the same with the native training ops (batch-norm + ReLU and dropout,
  :func:`emclassify.ops.training_ops_preferred`), the default;
- ``bf16-aten`` / ``bf16``: the last two with the training steps' forward pass in bfloat16 autocast
  (TrainConfig precision; the default on CPUs with native bf16);
- ``bf16-bn256``: ``bf16`` with 256 recalibration images.
Every recipe but the ``bf16`` ones trains in float32 whatever the machine.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

from emclassify._native import backend_description
from emclassify.bench import machine_description
from emclassify.evaluation import make_folds
from emclassify.input_decision import decide_preprocess
from emclassify.io import load_dataset
from emclassify.ops import training_ops
from emclassify.training import TrainConfig, fit, holdout_split, load_inputs

RECIPES = {
    "nchw-bn1024": {"memory_format": torch.contiguous_format, "bn_samples": 1024},
    "channels-last": {"memory_format": torch.channels_last, "bn_samples": 1024, "training_ops": False},
    "channels-last-bn512-aten": {"memory_format": torch.channels_last, "bn_samples": 512, "training_ops": False},
    "channels-last-bn512": {"memory_format": torch.channels_last, "bn_samples": 512},
    "bf16-aten": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16",
                  "training_ops": False},
    "bf16": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16"},
    "bf16-bn256": {"memory_format": torch.channels_last, "bn_samples": 256, "precision": "bfloat16"},
}
DEFAULT_RECIPES = "nchw-bn1024,channels-last-bn512-aten,channels-last-bn512,bf16-aten,bf16"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/nanoshapes"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="A B ... repeated this many times")
    ap.add_argument("--arch", default="lipnet-fcn+features")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--recipes", default=DEFAULT_RECIPES)
    ap.add_argument("--json")
    args = ap.parse_args()

    ds = load_dataset(args.dataset)
    pcfg, _ = decide_preprocess(ds.samples, mode="auto", size=args.size)
    data = load_inputs(ds.samples, pcfg, ds.classes, want_features=True)
    y = data.labels.numpy()
    groups = [s.group for s in data.samples] if ds.has_groups else None
    folds = make_folds(y, groups, 5, 0)
    train_idx = np.nonzero(folds != 0)[0]
    tr, va = holdout_split(y[train_idx], [groups[i] for i in train_idx] if groups else None, 0.15, 0)
    train_set, val_set = data.subset(train_idx[tr]), data.subset(train_idx[va])
    cfg = TrainConfig(arch=args.arch, epochs=args.epochs, patience=args.epochs + 1)

    names = args.recipes.split(",")
    runs = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            t0 = time.perf_counter()
            recipe = dict(RECIPES[name])
            run_cfg = replace(cfg, precision=recipe.pop("precision", "float32"))
            with training_ops(recipe.pop("training_ops", True)):
                res = fit(train_set, val_set, len(ds.classes), run_cfg, **recipe)
            seconds = time.perf_counter() - t0
            runs[name].append({"seconds": seconds, "images_per_s": len(train_set) * len(res.history) / seconds,
                               "val_accuracy_last": res.history[-1].val_accuracy,
                               "val_macro_f1_best": max(h.val_macro_f1 for h in res.history)})
            print(f"{name:22s} {runs[name][-1]['images_per_s']:6.1f} images/s  "
                  f"val acc (last epoch) {res.history[-1].val_accuracy:.3f}", flush=True)
    base = names[0]
    summary = {n: float(np.median([r["images_per_s"] for r in runs[n]])) for n in names}
    report = {
        "date": date.today().isoformat(), "machine": machine_description(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "native_library": backend_description(), "dataset": str(args.dataset), "arch": args.arch, "size": args.size,
        "epochs": args.epochs, "n_train": len(train_set), "n_validation": len(val_set),
        "median_images_per_s": summary, "ratio_to_" + base: {n: summary[n] / summary[base] for n in names},
        "runs": runs,
    }
    print(json.dumps({k: report[k] for k in ("median_images_per_s", "ratio_to_" + base)}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
