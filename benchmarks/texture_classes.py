"""Texture-defined classes: emclassify's defaults beside a plain CNN trained longer (BENCHMARKS.md).

    emclassify synth tex --problem texture --n 1200 --seed 5
    python benchmarks/texture_classes.py tex [--folds 5] [--epochs 30] [--skip-defaults | --defaults-report DIR]

The issue's yardstick, measured on the same group-aware folds in one run: a plain 5-layer CNN on the
whole 41x41 image (per-image z-score), trained 30 epochs with the 8 rotations/reflections and small
shifts as augmentation, AdamW with a cosine schedule, and test-time averaging over the 8 views -- the
recipe that reached 84 % on the public 15-class TEM virus-texture set. Beside it ``emclassify cv
FOLDER`` with every default (run as a user runs it, through the CLI), or an existing ``cv`` report of
the same folder (``--defaults-report``). Prints JSON: per-fold and pooled accuracy / macro-F1, the wall
time of each, and an exact McNemar test of the two on the same particles.

This harness is a yardstick, not part of emclassify: it imports the package only for the data loader,
the folds and the metrics.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emclassify import metrics
from emclassify.evaluation import make_folds, mcnemar_exact
from emclassify.io import load_dataset, read_image


def plain_cnn(n_classes: int) -> nn.Module:
    """Five 3x3 conv layers (32-32-64-64-128) with batch-norm and ReLU, two max-pools, global mean."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(128, n_classes))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` (0..7) of a (N, C, H, W) batch: k % 4 quarter turns, reflected when k >= 4."""
    x = torch.rot90(x, k % 4, (2, 3))
    return x.flip(3) if k >= 4 else x


def load_images(samples, side: int) -> torch.Tensor:
    """(N, 1, side, side) float32, each image resized to ``side`` and z-scored over itself."""
    out = torch.empty(len(samples), 1, side, side)
    for i, s in enumerate(samples):
        img = torch.from_numpy(read_image(s.path).array.astype(np.float32))[None, None]
        img = torch.nn.functional.interpolate(img, size=(side, side), mode="bilinear", align_corners=False)
        out[i] = (img - img.mean()) / img.std().clamp_min(1e-6)
    return out


def fit_and_predict(x_tr, y_tr, x_te, n_classes: int, epochs: int, seed: int) -> np.ndarray:
    """Train :func:`plain_cnn` on (x_tr, y_tr); return test probabilities averaged over 8 views."""
    torch.manual_seed(seed)
    net = plain_cnn(n_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(x_tr) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(64):
            xb = dihedral(x_tr[idx], int(torch.randint(8, (1,), generator=gen)))
            dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            xb = torch.roll(xb, (dy, dx), (2, 3))
            loss = nn.functional.cross_entropy(net(xb), y_tr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        probs = sum(torch.softmax(net(dihedral(x_te, k)), 1) for k in range(8)) / 8
    return probs.numpy()


def scores(y, pred, classes) -> dict:
    s = metrics.summary(metrics.confusion_matrix(y, pred, len(classes)), classes)
    return {"accuracy": round(s["accuracy"], 4), "macro_f1": round(s["macro_f1"], 4)}


def run_defaults(folder: str, folds: int) -> dict:
    """``emclassify cv FOLDER --folds K`` with every default, through the CLI; its metrics.json."""
    out = Path(tempfile.mkdtemp(prefix="texture-cv-"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emclassify", "cv", folder, "--folds", str(folds), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    return {"seconds": round(seconds, 1), "report": str(out), "metrics": m}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--side", type=int, default=41)
    ap.add_argument("--seed", type=int, default=0, help="fold seed (emclassify cv's default is 0)")
    ap.add_argument("--skip-defaults", action="store_true")
    ap.add_argument("--defaults-report", help="compare with this `emclassify cv` report folder instead of running one")
    args = ap.parse_args()
    ds = load_dataset(args.folder)
    y = np.asarray(ds.labels)
    groups = [s.group for s in ds.samples]
    fold = make_folds(y, groups, args.folds, args.seed)
    x = load_images(ds.samples, args.side)
    t0 = time.perf_counter()
    pred = np.empty(len(y), np.int64)
    per_fold = []
    for f in range(args.folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        p = fit_and_predict(x[tr], torch.from_numpy(y[tr]), x[te], len(ds.classes), args.epochs, args.seed + f)
        pred[te] = p.argmax(1)
        per_fold.append(scores(y[te], pred[te], ds.classes))
        print(f"plain CNN fold {f + 1}: {per_fold[-1]}", file=sys.stderr)
    result = {
        "data": args.folder, "particles": len(y), "classes": ds.classes, "folds": args.folds,
        "machine_threads": torch.get_num_threads(),
        "plain_cnn": {"epochs": args.epochs, "side": args.side, "seconds": round(time.perf_counter() - t0, 1),
                      "pooled": scores(y, pred, ds.classes), "per_fold": per_fold},
    }
    if not args.skip_defaults:
        d = run_defaults(args.folder, args.folds) if not args.defaults_report else {
            "seconds": None, "report": args.defaults_report,
            "metrics": json.loads((Path(args.defaults_report) / "metrics.json").read_text())}
        m = d["metrics"]
        with open(Path(d["report"]) / "predictions.csv", newline="") as fh:
            theirs = {r["path"]: ds.classes.index(r["predicted"]) for r in csv.DictReader(fh)}
        both = [i for i, s in enumerate(ds.samples) if s.relpath in theirs]
        ours_right = pred[both] == y[both]
        theirs_right = np.array([theirs[ds.samples[i].relpath] for i in both]) == y[both]
        result["mcnemar_defaults_vs_plain_cnn"] = {"particles": len(both), **mcnemar_exact(theirs_right, ours_right)}
        result["emclassify_defaults"] = {
            "seconds": d["seconds"], "report": d["report"],
            "pooled": {"accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1")},
            "per_fold": [{k: f.get(k) for k in ("accuracy", "macro_f1", "arch")} for f in m.get("folds", [])],
            "input": m.get("input_decision") or m.get("preprocess"),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
