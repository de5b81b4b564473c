"""Finders and the whole micrograph pipeline, 5-fold by micrograph (BENCHMARKS.md, "Finding particles").

    python benchmarks/finder_cv.py ../shared/data/nanoshapes-micrographs \\
        --crops ../shared/data/nanoshapes --folds 5 --out finder-cv.json

The same as ``emclassify find-eval FOLDER --folds 5 --train-classifier``, plus, side by side in the
same folds, a classifier trained on curated crops. Per fold, whole micrographs are held out. On the
others, the learned finder is trained with its defaults, and two classifiers with ``emclassify
train``'s defaults: one on the particles the fold's finder finds in those micrographs (labelled by
the outlined particles they match), and, with ``--crops`` (a particle-image dataset whose
``group`` is the micrograph name, e.g. NanoShapes), one on the curated crops of those micrographs
only. On the held-out micrographs: learned and classical finders (F1 at IoU >= 0.5, mean IoU,
count error), and end to end for each classifier: particles found and classified against the
outlined ones (macro-F1 of the classes; see :mod:`emclassify.finding.evaluate`). Writes the
metrics JSON and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from emclassify.events import FinderFoldEnded, FinderStep
from emclassify.finding.evaluate import cross_validate_finders
from emclassify.finding.training import FinderTrainSettings
from emclassify.inference import Classifier
from emclassify.input_decision import decide_preprocess
from emclassify.io import Dataset, load_dataset
from emclassify.training import TrainConfig, train


CURATED = "trained on curated crops"


def classifier_trainer(crops: Path, workdir: Path):
    """classifier_for(training micrograph names): a default classifier trained on their curated particles."""
    full = load_dataset(crops)

    def classifier_for(names):
        groups = {Path(n).stem for n in names}
        samples = [s for s in full.samples if s.group in groups]
        ds = Dataset(full.root, samples, full.classes, full.source, class_order=full.class_order)
        pcfg, decision = decide_preprocess(ds.samples)
        out = workdir / f"classifier-{len(list(workdir.iterdir()))}.safetensors"
        t0 = time.perf_counter()
        train(ds, pcfg, TrainConfig(), out, input_decision=decision)
        print(f"  classifier on {len(samples)} particles of {len(groups)} micrographs: "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        return {CURATED: Classifier.from_file(out, device="cpu")}

    return classifier_for


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("micrographs")
    ap.add_argument("--crops", help="particle-image dataset of the same micrographs (group = micrograph)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=FinderTrainSettings.steps)
    ap.add_argument("--precision", default=FinderTrainSettings.precision,
                    help="the finder's training steps: float32, bfloat16 or auto (the classifiers keep their own default)")
    ap.add_argument("--out", default="finder-cv.json")
    ap.add_argument("--overlays")
    ap.add_argument("--views", type=int, nargs="+", default=[1, 8],
                    help="score each fold's learned network with these views side by side (default 1 8)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="finder-cv-"))
    classifier_for = classifier_trainer(Path(args.crops), workdir) if args.crops else None

    done_rows = []

    def progress(ev):
        if isinstance(ev, FinderStep) and ev.step % 100 == 0:
            print(f"fold {ev.fold + 1}/{ev.folds} step {ev.step}/{ev.steps} loss {ev.loss:.3f} "
                  f"remaining ~{(ev.remaining_s or 0) / 60:.0f} min", flush=True)
        elif isinstance(ev, FinderFoldEnded):  # folds so far, kept if the run is stopped
            done_rows.append(ev.row)
            Path(args.out).with_suffix(".partial.json").write_text(json.dumps(done_rows, indent=2, default=str) + "\n")
            for name in ev.finders:
                o = ev.row[name]
                print(f"fold {ev.fold + 1}/{ev.folds} {name}: F1 {o['f1']:.3f} IoU {o['mean_iou'] or 0:.3f} "
                      f"end to end {o.get('end_to_end_macro_f1')}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    t0 = time.perf_counter()
    settings = FinderTrainSettings(steps=args.steps, precision=args.precision)
    r = cross_validate_finders(args.micrographs, folds=args.folds, settings=settings,
                               classifier_for=classifier_for, train_classifier=True, progress=progress,
                               overlays=args.overlays, learned_views=args.views)
    r["wall_seconds"] = round(time.perf_counter() - t0, 1)
    r["torch_threads"] = torch.get_num_threads()
    Path(args.out).write_text(json.dumps(r, indent=2, default=str) + "\n")
    for name in r["finders"]:
        o = r[name]["overall"]
        line = f"{name:15s} F1 {o['f1']:.3f}  mean IoU {o['mean_iou'] or 0:.3f}  |count error| {o['count_error_abs_mean']:.1f}"
        print(line)
        for which, e in r[name].get("end_to_end_by_classifier", {}).items():
            print(f"  classifier {which}: end-to-end macro-F1 {e['macro_f1']:.3f} "
                  f"(matched only: accuracy {e['matched_accuracy'] or 0:.3f}, macro-F1 {e['matched_macro_f1']:.3f})")
    print(f"wall {r['wall_seconds'] / 60:.1f} min -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
