"""Training throughput, recipes side by side in one run (BENCHMARKS.md "Training throughput").

    python benchmarks/train_throughput.py [DATASET] [--epochs 4] [--arch lipnet-fcn+features] [--size 48]
                                          [--json out.json]

DATASET defaults to ../shared/data/nanoshapes. The inputs are decoded and preprocessed once; every
recipe then trains the same architecture on the same split (fold 1 of the group-aware 5-fold CV,
its inner training part) for the same number of epochs with early stopping off, and is timed over
the whole epoch (augmentation, the training steps, batch-norm recalibration, validation), so
"images/s" is training images per second of an epoch as a user waits for it. Three figures:
- per epoch: training images x epochs / the epochs' summed time (the issue's "images/s per epoch");
- the whole fit: the same over ``fit()``'s wall time, which adds its set-up, mostly PyTorch
  importing ``torch._dynamo`` on the optimiser's first use (~1-1.4 s once per process);
- the epochs after the first (without the fresh process's one-off costs, e.g. oneDNN's kernel
  generation for each new shape). The recipes alternate
(A B A B ...) so drift of the machine's speed falls on both.

Each timed fit runs in a fresh process (``--worker``), so that the recipes without glibc allocator
tuning (:func:`emclassify.runtime.reuse_freed_memory`, process-wide once set) really run without it;
every recipe pays the same process start and its first epoch's one-off costs.

Recipes (``emclassify.training.fit`` keywords, plus ``precision``, ``training_ops`` and ``malloc_tuning``):
- ``nchw-bn1024``: the recipe before this harness (contiguous tensors, 1,024 recalibration images,
  ATen's batch-norm, ReLU and dropout: the native training ops take channels-last tensors only;
  glibc's allocator as it comes): the issue's starting point;
- ``channels-last``: channels-last tensors, 1,024 recalibration images, ATen's layers;
- ``channels-last-bn512-aten``: channels-last, 512 recalibration images, float32 steps, ATen's layers;
- ``channels-last-bn512``: the same with the native training ops (batch-norm + ReLU and dropout,
  :func:`emclassify.ops.training_ops_preferred`) and the allocator tuning: the default on a CPU
  without native bf16;
- ``bf16-aten``: the last two with the training steps' forward pass in bfloat16 autocast (TrainConfig
  precision), ATen's layers, float32 recalibration, no allocator tuning (the twelfth session's default);
- ``bf16-f32recal``: bf16 steps with the native training ops, float32 recalibration, no allocator
  tuning (the thirteenth session's default);
- ``bf16-no-malloc-tuning``: the same with the recalibration in the steps' bf16 autocast;
- ``bf16-sixth``: that with the allocator tuning (the fourteenth session's default);
- ``bf16-float32-validation``: that with AdamW's fused kernel;
- ``bf16``: that with each epoch's validation in the steps' bf16 autocast too: the default on CPUs
  with native bf16;
- ``bf16-bn256``: ``bf16`` with 256 recalibration images.
Recipes older than ``bf16-sixth`` validate in float32 and run AdamW's per-tensor loop; native
dropout's backward (one pass since the seventh round) is in every recipe with the native ops.
Every recipe but the ``bf16`` ones trains in float32 whatever the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
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

_SIXTH = {"autocast_validation": False, "fused_optimizer": False}
_OLD = {"malloc_tuning": False, "autocast_recalibration": False, **_SIXTH}
RECIPES = {
    "nchw-bn1024": {"memory_format": torch.contiguous_format, "bn_samples": 1024, **_OLD},
    "channels-last": {"memory_format": torch.channels_last, "bn_samples": 1024, "training_ops": False, **_OLD},
    "channels-last-bn512-aten": {"memory_format": torch.channels_last, "bn_samples": 512, "training_ops": False, **_OLD},
    "channels-last-bn512": {"memory_format": torch.channels_last, "bn_samples": 512},
    "bf16-aten": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16",
                  "training_ops": False, **_OLD},
    "bf16-f32recal": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16", **_OLD},
    "bf16-no-malloc-tuning": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16",
                              "malloc_tuning": False},
    "bf16-sixth": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16", **_SIXTH},
    "bf16-float32-validation": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16",
                                "autocast_validation": False},
    "bf16": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16"},
    "bf16-bn256": {"memory_format": torch.channels_last, "bn_samples": 256, "precision": "bfloat16"},
    "bf16-b128": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16", "batch_size": 128},
    "bf16-b32": {"memory_format": torch.channels_last, "bn_samples": 512, "precision": "bfloat16", "batch_size": 32},
}
DEFAULT_RECIPES = "nchw-bn1024,bf16-aten,bf16-sixth,bf16-float32-validation,bf16"


def prepare(dataset: str, size: int):
    """The inputs, decoded and preprocessed once, and fold 1's inner training and validation parts."""
    ds = load_dataset(dataset)
    pcfg, _ = decide_preprocess(ds.samples, mode="auto", size=size)
    data = load_inputs(ds.samples, pcfg, ds.classes, want_features=True)
    y = data.labels.numpy()
    groups = [s.group for s in data.samples] if ds.has_groups else None
    folds = make_folds(y, groups, 5, 0)
    train_idx = np.nonzero(folds != 0)[0]
    tr, va = holdout_split(y[train_idx], [groups[i] for i in train_idx] if groups else None, 0.15, 0)
    return ds, data.subset(train_idx[tr]), data.subset(train_idx[va])


def worker(args) -> int:
    """One timed fit of ``args.worker`` (run in its own process by :func:`main`); prints one JSON line."""
    ds, train_set, val_set = prepare(args.dataset, args.size)
    recipe = dict(RECIPES[args.worker])
    recipe.pop("malloc_tuning", None)  # the driver set EMCLASSIFY_MALLOC_TUNING for this process
    cfg = TrainConfig(arch=args.arch, epochs=args.epochs, patience=args.epochs + 1,
                      precision=recipe.pop("precision", "float32"), batch_size=recipe.pop("batch_size", TrainConfig.batch_size))
    t0 = time.perf_counter()
    with training_ops(recipe.pop("training_ops", True)):
        res = fit(train_set, val_set, len(ds.classes), cfg, **recipe)
    seconds = time.perf_counter() - t0
    later = [h.seconds for h in res.history[1:]]
    epochs = [h.seconds for h in res.history]
    print(json.dumps({"seconds": seconds, "images_per_s": len(train_set) * len(res.history) / seconds,
                      "images_per_s_per_epoch": len(train_set) * len(epochs) / sum(epochs),
                      "setup_seconds": seconds - sum(epochs),
                      # the epochs after the first: without the process's one-off costs (oneDNN's kernel
                      # generation for each new shape, first touch of memory), as the later epochs of a
                      # fit and every fold after the first of a CV run
                      "images_per_s_after_first_epoch": len(train_set) * len(later) / sum(later) if later else None,
                      "epoch_seconds": [h.seconds for h in res.history],
                      "val_accuracy_last": res.history[-1].val_accuracy,
                      "val_macro_f1_best": max(h.val_macro_f1 for h in res.history),
                      "n_train": len(train_set), "n_validation": len(val_set)}))
    return 0


def run_worker(args, name: str) -> dict:
    env = {**os.environ, "EMCLASSIFY_MALLOC_TUNING": "1" if RECIPES[name].get("malloc_tuning", True) else "0"}
    cmd = [sys.executable, __file__, args.dataset, "--worker", name, "--epochs", str(args.epochs),
           "--arch", args.arch, "--size", str(args.size)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/nanoshapes"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="A B ... repeated this many times")
    ap.add_argument("--arch", default="lipnet-fcn+features")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--recipes", default=DEFAULT_RECIPES)
    ap.add_argument("--json")
    ap.add_argument("--worker", choices=sorted(RECIPES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    names = args.recipes.split(",")
    runs = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            runs[name].append(run_worker(args, name))
            print(f"{name:24s} {runs[name][-1]['images_per_s_per_epoch']:6.1f} images/s per epoch, "
                  f"{runs[name][-1]['images_per_s']:6.1f} over the fit  "
                  f"val acc (last epoch) {runs[name][-1]['val_accuracy_last']:.3f}", flush=True)
    base = names[0]
    summary = {n: float(np.median([r["images_per_s"] for r in runs[n]])) for n in names}
    steady = {n: float(np.median([r["images_per_s_after_first_epoch"] or np.nan for r in runs[n]])) for n in names}
    per_epoch = {n: float(np.median([r["images_per_s_per_epoch"] for r in runs[n]])) for n in names}
    report = {
        "date": date.today().isoformat(), "machine": machine_description(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "native_library": backend_description(), "dataset": str(args.dataset), "arch": args.arch, "size": args.size,
        "epochs": args.epochs, "n_train": runs[base][0]["n_train"], "n_validation": runs[base][0]["n_validation"],
        "process_per_fit": True,
        "median_images_per_s_per_epoch": per_epoch,
        "ratio_per_epoch_to_" + base: {n: per_epoch[n] / per_epoch[base] for n in names},
        "median_images_per_s": summary, "ratio_to_" + base: {n: summary[n] / summary[base] for n in names},
        "median_images_per_s_after_first_epoch": steady,
        "ratio_after_first_epoch_to_" + base: {n: steady[n] / steady[base] for n in names},
        "runs": runs,
    }
    print(json.dumps({k: report[k] for k in ("median_images_per_s_per_epoch", "ratio_per_epoch_to_" + base,
                                             "median_images_per_s", "ratio_to_" + base,
                                             "ratio_after_first_epoch_to_" + base)}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
