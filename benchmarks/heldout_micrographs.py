"""Train on some micrographs' particles, test on particles of micrographs never seen (BENCHMARKS.md).

    python benchmarks/heldout_micrographs.py TRAIN_DIR TEST_DIR [--mode auto] [--arch auto] [--out m.safetensors]
    python benchmarks/heldout_micrographs.py --repeat DATASET [--splits 5] [--test-groups 7]

TRAIN_DIR/TEST_DIR are labelled datasets (see benchmarks/make_variants.py ``split``). Prints JSON: the
test accuracy, balanced accuracy and macro-F1 of the model with default settings, beside the majority
class of the training data, and the training time.

``--repeat`` draws several such splits of one dataset (split seed s holds out the same micrographs as
``make_variants.py``'s split with seed s) and reports each and their mean: one split of a few
micrographs is one draw from a wide range, so a gap to the CV estimate is judged on the mean.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from emclassify import metrics
from emclassify.guardrails import majority_scores
from emclassify.inference import Classifier
from emclassify.input_decision import decide_preprocess
from emclassify.io import Dataset, load_dataset
from emclassify.training import TrainConfig, load_inputs, train


def per_group_accuracy(samples, y, pred) -> dict:
    """Accuracy on each test micrograph (``group``), so a gap to the CV estimate can be traced to
    micrographs (compare with the CV's out-of-fold predictions.csv of the same particles)."""
    out = {}
    for g in sorted({s.group for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.group == g]
        out[g] = {"n": len(idx), "accuracy": round(float(np.mean(y[idx] == pred[idx])), 4)}
    return out


def split_by_groups(ds: Dataset, n_test_groups: int, seed: int) -> Tuple[Dataset, Dataset]:
    """The particles of ``n_test_groups`` micrographs drawn with ``seed`` (as make_variants.split), and the rest."""
    groups = sorted({s.group for s in ds.samples})
    test = set(np.random.default_rng(seed).choice(groups, size=n_test_groups, replace=False).tolist())
    part = lambda keep: Dataset(ds.root, [s for s in ds.samples if keep(s.group)], list(ds.classes), ds.class_order)
    return part(lambda g: g not in test), part(lambda g: g in test)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("train_dir", nargs="?")
    ap.add_argument("test_dir", nargs="?")
    ap.add_argument("--repeat", metavar="DATASET", help="draw --splits held-out splits of DATASET instead")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--test-groups", type=int, default=7)
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--arch", default=TrainConfig.arch)
    ap.add_argument("--seed", type=int, default=TrainConfig.seed, help="training seed (run several: one run varies)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.repeat:
        ds = load_dataset(args.repeat)
        runs = []
        for split_seed in range(args.splits):
            tr, te = split_by_groups(ds, args.test_groups, split_seed)
            runs.append({"split_seed": split_seed, **run(tr, te, args)})
            print(json.dumps(runs[-1]), file=sys.stderr)
        acc = [r["test"]["accuracy"] for r in runs]
        print(json.dumps({"splits": runs, "mean_accuracy": round(float(np.mean(acc)), 4),
                          "sd_accuracy": round(float(np.std(acc, ddof=1)), 4) if len(acc) > 1 else None}, indent=2))
        return 0
    if not (args.train_dir and args.test_dir):
        ap.error("give TRAIN_DIR and TEST_DIR, or --repeat DATASET")
    print(json.dumps(run(load_dataset(args.train_dir), load_dataset(args.test_dir), args), indent=2))
    return 0


def run(tr: Dataset, te: Dataset, args) -> dict:
    """Train with defaults on ``tr``; score on ``te``."""
    pcfg, decision = decide_preprocess(tr.samples, mode=args.mode)
    out = Path(args.out or tempfile.mkdtemp()) / "model.safetensors" if not args.out else Path(args.out)
    t0 = time.perf_counter()
    outcome = train(tr, pcfg, TrainConfig(arch=args.arch, seed=args.seed), out, input_decision=decision)
    seconds = time.perf_counter() - t0
    clf = Classifier.from_file(out, device="cpu")
    data = load_inputs(te.samples, clf.config, te.classes, want_features=clf.needs_features)
    assert te.classes == clf.classes
    probs = clf.predict_proba_inputs(None if clf.kind == "features" else data.x, data.features)
    y = data.labels.numpy()
    summary = metrics.summary(metrics.confusion_matrix(y, probs.argmax(1), len(te.classes)), te.classes)
    train_labels = np.asarray(tr.labels)
    majority = majority_scores(train_labels, y, te.classes)
    return {
        "mode": pcfg.mode, "kept_arch": outcome.card.arch, "train_particles": len(tr), "test_particles": len(y),
        "test_groups": len({s.group for s in te.samples}),
        "test": {k: summary[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
        "majority": {k: majority[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
        "validation": {k: outcome.validation[k] for k in ("accuracy", "macro_f1")},
        "flags": [f["code"] for f in outcome.flags], "train_seconds": round(seconds, 1),
        "per_micrograph_accuracy": per_group_accuracy(data.samples, y, probs.argmax(1)),
    }


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    sys.exit(main())
