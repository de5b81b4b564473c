"""Learned finder training speed: float32 and bf16 autocast steps, each with ATen's batch-norm + ReLU
and with the native training ops (``emclassify.ops.training_ops``), side by side in one run.

    python benchmarks/finder_train_throughput.py ../shared/data/nanoshapes-micrographs [--steps 60] [--rounds 2]
                                                 [--json out.json]

Trains the finder network with its default settings (:class:`FinderTrainSettings`) for ``--steps``
steps on every outlined micrograph of the folder, once per recipe, alternating (A B C D A B ...) so
drift of the machine's speed falls on both; reports steps/s (sampling crops, the step, the
optimiser) and the mean loss of the last 20 steps. Speed only: whether bf16 steps find as well is
what ``benchmarks/finder_cv.py --precision`` measures.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

from emclassify._native import backend_description
from emclassify.bench import machine_description
from emclassify.finding.evaluate import outlined_micrographs
from emclassify.finding.training import FinderTrainSettings, load_outlined, train_network
from emclassify.ops import training_ops
from emclassify.runtime import cpu_has_native_bf16


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("micrographs")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    folder = Path(args.micrographs)
    data, errors = load_outlined(outlined_micrographs(folder), folder)
    base = replace(FinderTrainSettings(), steps=args.steps, device="cpu")
    recipes = {"float32-aten": ("float32", False), "float32": ("float32", True),
               "bfloat16-aten": ("bfloat16", False), "bfloat16": ("bfloat16", True)}
    runs = {name: [] for name in recipes}
    for _ in range(args.rounds):
        for name, (precision, native_ops) in recipes.items():
            with training_ops(native_ops):
                _, record = train_network(data, replace(base, precision=precision))
            runs[name].append({"steps_per_s": record["steps_done"] / record["seconds"],
                               "final_loss": record["final_loss"], "precision_used": record["precision"]})
            print(f"{name:14s} {runs[name][-1]['steps_per_s']:.2f} steps/s  loss {record['final_loss']}", flush=True)
    median = {p: float(np.median([r["steps_per_s"] for r in v])) for p, v in runs.items()}
    report = {"date": date.today().isoformat(), "machine": machine_description(),
              "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "micrographs": str(folder), "n_micrographs": len(data), "unreadable": errors,
              "settings": {"steps": args.steps, "batch": base.batch, "crop": base.crop, "widths": list(base.widths)},
              "native_library": backend_description(), "median_steps_per_s": median,
              "ratio_to_float32_aten": {p: v / median["float32-aten"] for p, v in median.items()}, "runs": runs}
    print(json.dumps({k: report[k] for k in ("median_steps_per_s", "ratio_to_float32_aten")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
