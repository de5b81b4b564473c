"""Diagnostic (not a result): where are the particles a finder finds misclassified -- by class, by
size, by micrograph?

    python benchmarks/found_errors.py ../shared/data/nanoshapes-micrographs K finder.safetensors out.json

On CV fold K (the split of ``find-eval --folds 5``), with that fold's finder file (e.g. saved by
``benchmarks/finder_reject_class.py``), trains the classifier on found particles exactly as
``find-eval --train-classifier`` does, classifies the held-out micrographs' found particles, and
writes one row per found particle (micrograph, outlined class or none, predicted class, diameter,
IoU); prints the confusion of matched particles, accuracy by diameter quartile and by micrograph.
"""
import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from emclassify.finding.evaluate import classifier_on_found, classify_found, found_crop_context, outlined_classes
from emclassify.finding.finderfile import load_finder
from emclassify.finding.learned import LearnedFinder
from emclassify.finding.matching import match_instances
from outlined_fold import load_fold

ap = argparse.ArgumentParser()
ap.add_argument("folder", type=Path)
ap.add_argument("fold", type=int)
ap.add_argument("finder", type=Path)
ap.add_argument("out", type=Path)
ap.add_argument("--peak-threshold", type=float, help="instead of the card's (for finder files older than it)")
args = ap.parse_args()
train, test, truths = load_fold(args.folder, args.fold)
loaded = load_finder(args.finder)
if args.peak_threshold is not None:
    loaded.card.peak_threshold = args.peak_threshold
finder = LearnedFinder("", preloaded=loaded)
with tempfile.TemporaryDirectory() as work:
    clf, _ = classifier_on_found(train, finder, truths, Path(work),
                                 found_crop_context(loaded.card.median_diameter_px))
rows = []
for d in test:
    det = finder.find(d.raw)
    predicted, classes = classify_found(d.raw, det, clf), outlined_classes(d, truths)
    match = match_instances(det.labels, d.labels)
    outlined = {f: (t, iou) for f, t, iou in match.pairs}
    for p in det.particles:
        t, iou = outlined.get(p.index, (None, 0.0))
        rows.append({"micrograph": d.name, "outlined": classes.get(t) if t else None,
                     "predicted": predicted.get(p.index), "diameter_px": round(p.size.diameter_px, 1),
                     "iou": round(iou, 3)})
args.out.write_text(json.dumps({"fold": args.fold, "finder": str(args.finder),
                                "peak_threshold": loaded.card.peak_threshold, "particles": rows}, indent=0))
matched = [r for r in rows if r["outlined"]]
print("matched (outlined, predicted):", Counter((r["outlined"], r["predicted"]) for r in matched).most_common())
size = np.array([r["diameter_px"] for r in matched])
right = np.array([r["outlined"] == r["predicted"] for r in matched])
edges = np.percentile(size, [0, 25, 50, 75, 100])
for lo, hi in zip(edges[:-1], edges[1:]):
    sel = (size >= lo) & (size <= hi)
    print(f"diameter {lo:.0f}-{hi:.0f} px: {right[sel].mean():.3f} right of {sel.sum()}")
for name in sorted({r["micrograph"] for r in matched}):
    sel = np.array([r["micrograph"] == name for r in matched])
    print(f"{name}: {right[sel].mean():.3f} right of {sel.sum()}")
print("unmatched found objects predicted as:", Counter(r["predicted"] for r in rows if not r["outlined"]))
