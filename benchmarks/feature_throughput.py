"""Handcrafted features per particle, this tree's code and an earlier commit's side by side in one run.

    python benchmarks/feature_throughput.py DATASET [DATASET ...] [--baseline REV] [--n 300] [--json OUT]

For each dataset (a particle-image folder or manifest), up to ``--n`` particles (every k-th, images
and masks decoded beforehand) go through ``emclassify.features.particle_features`` with their masks
and without (automatic segmentation), in rounds alternating the two versions; the best round of each
is reported in ms per particle. The baseline is ``emclassify/features.py`` as of ``--baseline``
(default HEAD), loaded from git beside the current module, so both run on the same machine and
inputs; the largest relative difference of their vectors is reported too (0 or rounding: the feature
values must not change within FEATURES_VERSION).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from emclassify import features
from emclassify.bench import machine_description
from emclassify.io import load_dataset, read_image, read_mask


def load_baseline(rev: str):
    """``emclassify.features`` as of git revision ``rev``, as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:emclassify/features.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp()) / "features_baseline.py"
    path.write_text(source.replace("from .segment import", "from emclassify.segment import"))
    spec = importlib.util.spec_from_file_location("features_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--baseline", default="HEAD")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    baseline = load_baseline(args.baseline)
    versions = {f"baseline ({args.baseline})": baseline, "this tree": features}
    result = {"date": date.today().isoformat(), "machine": machine_description(),
              "command": "python benchmarks/feature_throughput.py " + " ".join(sys.argv[1:]), "rows": []}
    print("| dataset | particles (median side) | masks | " + " | ".join(f"{v} ms" for v in versions) + " | ratio | max rel. diff |")
    print("|---|---|---|" + "---|" * (len(versions) + 2))
    for root in args.datasets:
        ds = load_dataset(root)
        step = max(1, len(ds.samples) // args.n)
        samples = [s for s in ds.samples[::step] if s.mask is not None][: args.n]
        pairs = []
        for s in samples:
            img = read_image(s.path).array
            pairs.append((img, read_mask(s.mask, img.shape)))
        side = int(np.median([max(p[0].shape) for p in pairs]))
        for with_masks in (True, False):
            best = {}
            for _ in range(args.rounds):
                for name, module in versions.items():
                    t = time.perf_counter()
                    for img, mask in pairs:
                        module.particle_features(img, mask if with_masks else None)
                    best[name] = min(best.get(name, np.inf), (time.perf_counter() - t) / len(pairs) * 1e3)
            diff = 0.0
            for img, mask in pairs[:100]:
                a = baseline.particle_features(img, mask if with_masks else None)
                b = features.particle_features(img, mask if with_masks else None)
                diff = max(diff, float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12))))
            ms = list(best.values())
            row = {"dataset": str(root), "particles": len(pairs), "median_side_px": side, "masks": with_masks,
                   "ms_per_particle": {k: round(v, 3) for k, v in best.items()}, "ratio": round(ms[0] / ms[1], 2),
                   "max_relative_difference": diff}
            result["rows"].append(row)
            print(f"| {root} | {len(pairs)} ({side} px) | {'given' if with_masks else 'automatic'} | "
                  + " | ".join(f"{v:.2f}" for v in ms) + f" | {row['ratio']:.2f} | {diff:.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
