"""Train on some micrographs' particles, test on particles of micrographs never seen (BENCHMARKS.md).

    python benchmarks/heldout_micrographs.py TRAIN_DIR TEST_DIR [--mode auto] [--arch auto] [--out m.safetensors]

TRAIN_DIR/TEST_DIR are labelled datasets (see benchmarks/make_variants.py ``split``). Prints JSON: the
test accuracy, balanced accuracy and macro-F1 of the model with default settings, beside the majority
class of the training data, and the training time.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emclassify import metrics
from emclassify.guardrails import majority_scores
from emclassify.inference import Classifier
from emclassify.input_decision import decide_preprocess
from emclassify.io import load_dataset
from emclassify.training import TrainConfig, load_inputs, train


def per_group_accuracy(samples, y, pred) -> dict:
    """Accuracy on each test micrograph (``group``), so a gap to the CV estimate can be traced to
    micrographs (compare with the CV's out-of-fold predictions.csv of the same particles)."""
    out = {}
    for g in sorted({s.group for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.group == g]
        out[g] = {"n": len(idx), "accuracy": round(float(np.mean(y[idx] == pred[idx])), 4)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("train_dir")
    ap.add_argument("test_dir")
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--arch", default=TrainConfig.arch)
    ap.add_argument("--seed", type=int, default=TrainConfig.seed, help="training seed (run several: one run varies)")
    ap.add_argument("--out")
    args = ap.parse_args()
    tr, te = load_dataset(args.train_dir), load_dataset(args.test_dir)
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
    print(json.dumps({
        "mode": pcfg.mode, "kept_arch": outcome.card.arch, "train_particles": len(tr), "test_particles": len(y),
        "test_groups": len({s.group for s in te.samples}),
        "test": {k: summary[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
        "majority": {k: majority[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
        "validation": {k: outcome.validation[k] for k in ("accuracy", "macro_f1")},
        "flags": [f["code"] for f in outcome.flags], "train_seconds": round(seconds, 1),
        "per_micrograph_accuracy": per_group_accuracy(data.samples, y, probs.argmax(1)),
    }, indent=2))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    sys.exit(main())
