"""What the learned finder's errors are on held-out micrographs, and what they cost end to end
(BENCHMARKS.md, "What the learned finder's errors are").

    python benchmarks/finder_errors.py ../shared/data/nanoshapes-micrographs WORKDIR \\
        [--classifiers DIR] [--precision bfloat16] [--json OUT]

Per fold of ``find-eval --folds 5`` (same folds, seed 0), trains the learned finder as the
cross-validation does (saved to ``WORKDIR/finder-K.safetensors``, with the held-out micrographs'
maps in ``WORKDIR/maps-K-<name>.npz``; a later run reuses them), then scores the held-out
micrographs: F1 and the errors by kind (:mod:`emclassify.finding.matching`). With
``--classifiers DIR`` (``classifier-K.safetensors`` per fold, trained on the fold's training
micrographs only, as ``benchmarks/finder_cv.py --crops`` leaves them in its work folder), also the
end-to-end macro-F1, with ``find-eval``'s diagnostic ``end_to_end.unoutlined``: the same with the
found particles that lie where nothing is outlined left out of the count (how much incomplete
outlines can explain, not a score; the JSONs of 2026-12-06 call it ``end_to_end_without_unoutlined``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    from emclassify.finding.evaluate import (classify_found, end_to_end_scores, micrograph_folds, outlined_classes,
                                             outlined_micrographs, truth_classes)
    from emclassify.finding.finderfile import load_finder, save_finder
    from emclassify.finding.learned import LearnedFinder
    from emclassify.finding.matching import match_instances, summarise
    from emclassify.finding.training import FinderTrainSettings, fit_finder, load_outlined, split_validation

    ap = argparse.ArgumentParser()
    ap.add_argument("micrographs")
    ap.add_argument("workdir")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--classifiers")
    ap.add_argument("--precision", default="bfloat16")
    ap.add_argument("--json")
    args = ap.parse_args()
    folder, work = Path(args.micrographs), Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    settings = FinderTrainSettings(precision=args.precision)
    data, _ = load_outlined(outlined_micrographs(folder), folder)
    truths = truth_classes(folder, outlined_micrographs(folder)) if args.classifiers else None
    parts = micrograph_folds(len(data), args.folds, 0)
    matches, records = [], []
    for k, test_idx in enumerate(parts):
        path = work / f"finder-{k}.safetensors"
        if not path.exists():
            train = [data[i] for i in range(len(data)) if i not in set(test_idx)]
            inner_train, inner_val = split_validation(len(train), settings.val_fraction, settings.seed + k)
            t0 = time.perf_counter()
            loaded = fit_finder([train[i] for i in inner_train], [train[i] for i in inner_val], settings, fold=k,
                                folds=args.folds, source=str(folder))
            save_finder(path, loaded.net, loaded.card)
            print(f"fold {k + 1}: finder trained in {time.perf_counter() - t0:.0f} s", flush=True)
        finder = LearnedFinder("", preloaded=load_finder(path))
        classifier = None
        if args.classifiers:
            from emclassify.inference import Classifier
            classifier = Classifier.from_file(Path(args.classifiers) / f"classifier-{k}.safetensors", device="cpu")
        for i in test_idx:
            d = data[i]
            maps = work / f"maps-{k}-{Path(d.name).stem}.npz"
            if not maps.exists():
                fg, centre, _ = finder.maps(d.raw)
                np.savez_compressed(maps, fg=fg, centre=centre)
            z = np.load(maps)
            det = finder.detections(z["fg"], z["centre"])
            m = match_instances(det.labels, d.labels)
            matches.append(m)
            if classifier is None:
                continue
            predicted = classify_found(d.raw, det, classifier)
            truth = outlined_classes(d, truths)
            records.append((m, predicted, truth))
    from outlined_fold import write_result

    out = {"finder": summarise(matches)}
    if records:
        classes = sorted(set(truths.values()))
        out["end_to_end"] = end_to_end_scores(records, classes)   # with "unoutlined": the diagnostic
    write_result("finder_errors.py", out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
