"""The SVM baseline's fit, its grid on one thread vs on every core, side by side (BENCHMARKS.md
"A 14,000-particle cross-validation", third round).

    python benchmarks/svm_fit_time.py DATASET [--rounds 2] [--json out.json]

The SVM fitted as each cross-validation fold fits it: the handcrafted features of fold 1's
training part (group-aware 5-fold, as ``emclassify cv``), its bounded stratified subsample
(``guardrails.subsample_for_svm``), ``fit_svm`` with the default grid. ``fit_svm`` runs its grid in
as many threads as torch may use, so the recipes are ``torch.set_num_threads(1)`` and the
machine's default; they alternate (A B A B ...) so drift of the machine falls on both. Checks that
both choose the same C and gamma and give the same decision values.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from emclassify.bench import machine_description
from emclassify.evaluation import make_folds
from emclassify.guardrails import subsample_for_svm
from emclassify.input_decision import decide_preprocess
from emclassify.io import load_dataset
from emclassify.models.svm import fit_svm
from emclassify.training import load_inputs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    pcfg, _ = decide_preprocess(ds.samples)
    labels = np.array([ds.classes.index(s.label) for s in ds.samples])
    groups = [s.group for s in ds.samples]
    train_idx = np.nonzero(make_folds(labels, groups, 5, 0) != 0)[0]   # every fold but the first
    data = load_inputs([ds.samples[i] for i in train_idx], pcfg, ds.classes, want_features=True)
    y = data.labels.numpy()
    idx = subsample_for_svm(y, 0)
    x, y = data.features[idx], y[idx]
    default_threads = torch.get_num_threads()
    recipes = {"grid on 1 thread": 1, f"grid on {default_threads} threads": default_threads}
    times = {name: [] for name in recipes}
    decisions = {}
    for _ in range(args.rounds):
        for name, threads in recipes.items():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            model, info = fit_svm(x, y, len(ds.classes), seed=0)
            times[name].append(time.perf_counter() - t0)
            decisions[name] = (info.C, info.gamma, model(torch.as_tensor(x[:500])).numpy())
    torch.set_num_threads(default_threads)
    (c1, g1, d1), (c2, g2, d2) = decisions.values()
    same = c1 == c2 and g1 == g2 and np.array_equal(d1, d2)
    out = {"date": date.today().isoformat(), "machine": machine_description(), "dataset": args.dataset,
           "svm_training_examples": int(len(y)), "features": int(x.shape[1]),
           "seconds": {k: [round(v, 2) for v in t] for k, t in times.items()},
           "median_seconds": {k: round(float(np.median(t)), 2) for k, t in times.items()},
           "same_choice_and_decisions": bool(same)}
    for k, v in out["median_seconds"].items():
        print(f"{k:22s} {v:6.2f} s")
    print(f"same C, gamma and decision values: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
