"""Diagnostic (not a result): where do the learned finder's matched outlines lose IoU?

    python benchmarks/finder_threshold.py ../shared/data/nanoshapes-micrographs 3 out.json

Trains the default finder on the training micrographs of CV fold K (same split as find-eval --folds 5),
then on that fold's held-out micrographs: IoU/F1 against the foreground threshold, and the area
ratio found/outlined of matched pairs (systematic shrink or growth)."""
import json
import sys
import time
from pathlib import Path

import numpy as np

from emclassify.finding.training import fit_finder, FinderTrainSettings
from emclassify.finding.learned import LearnedFinder
from emclassify.finding.matching import match_instances, summarise
from outlined_fold import load_fold

folder = Path(sys.argv[1]); k = int(sys.argv[2])
train, test, _ = load_fold(folder, k)
t0 = time.time()
loaded = fit_finder(train, [], FinderTrainSettings(), fold=k, folds=5)
print("trained", round(time.time() - t0), "s", flush=True)
f = LearnedFinder("", preloaded=loaded)
maps = [f.maps(d.raw) for d in test]
out = {}
for fg_t in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6):
    ms, ratios = [], []
    for (fg, c, sc), d in zip(maps, test):
        det = f.detections(fg, c, sc, thresholds=(fg_t, 0.5))
        m = match_instances(det.labels, d.labels)
        ms.append(m)
        fa = np.bincount(det.labels.ravel()); ta = np.bincount(d.labels.ravel())
        ratios += [fa[a] / ta[b] for a, b, _ in m.pairs]
    s = summarise(ms)
    out[fg_t] = {"f1": round(s["f1"], 4), "mean_iou": round(s["mean_iou"], 4), "area_ratio_median": round(float(np.median(ratios)), 3)}
    print(fg_t, out[fg_t], flush=True)
json.dump(out, open(sys.argv[3] if len(sys.argv) > 3 else "finder-threshold.json", "w"), indent=1)
