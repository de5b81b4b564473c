"""Diagnostic (not a result): where do the learned finder's matched outlines lose IoU, and does
averaging the maps over the 8 rotations/reflections of the micrograph (test-time augmentation) help?

    python benchmarks/finder_iou_sources.py ../shared/data/nanoshapes-micrographs 3 out.json [finder.safetensors] [--steps N]

Trains the default finder on the training micrographs of CV fold K (same split as find-eval --folds 5;
with a finder file that exists, loads it instead; with one that does not, saves it there), then on the
fold's held-out micrographs reports, for plain and augmented maps: F1 and mean IoU, mean IoU of
particles that touch another outlined particle and of those that do not, and the pixel IoU of the
foreground alone (what the outline could reach if every split were right)."""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from emclassify.finding.finderfile import load_finder, save_finder
from emclassify.finding.learned import LearnedFinder
from emclassify.finding.matching import match_instances, summarise
from emclassify.finding.training import FinderTrainSettings, fit_finder
from outlined_fold import load_fold


def touching_ids(labels: np.ndarray) -> set:
    """Outlined particles whose 1-px dilation meets another particle."""
    grown = ndimage.grey_dilation(labels, size=3)
    shrunk = -ndimage.grey_dilation(-np.where(labels > 0, labels, labels.max() + 1), size=3)
    meet = (grown != shrunk) & (labels > 0) & (grown > 0) & (shrunk <= labels.max())
    return set(np.unique(labels[meet]).tolist()) - {0}


def score(finder, maps, test):
    ms, touch, alone, inter, union = [], [], [], 0, 0
    for (fg, c, sc), d in zip(maps, test):
        det = finder.detections(fg, c, sc)
        m = match_instances(det.labels, d.labels)
        ms.append(m)
        t = touching_ids(d.labels)
        for _, true_id, iou in m.pairs:
            (touch if true_id in t else alone).append(iou)
        a, b = fg > 0.5, d.labels > 0
        inter += int((a & b).sum())
        union += int((a | b).sum())
    s = summarise(ms)
    return {"f1": round(s["f1"], 4), "mean_iou": round(s["mean_iou"], 4),
            "mean_iou_touching": round(float(np.mean(touch)), 4), "matched_touching": len(touch),
            "mean_iou_alone": round(float(np.mean(alone)), 4), "matched_alone": len(alone),
            "foreground_pixel_iou": round(inter / union, 4)}


ap = argparse.ArgumentParser()
ap.add_argument("folder", type=Path)
ap.add_argument("fold", type=int)
ap.add_argument("out", type=Path, nargs="?", default=Path("finder-iou-sources.json"))
ap.add_argument("finder", type=Path, nargs="?", default=None)
ap.add_argument("--steps", type=int, default=FinderTrainSettings.steps, help="finder training steps (default: the default)")
args = ap.parse_args()
folder, k, out_path, saved = args.folder, args.fold, args.out, args.finder
train, test, _ = load_fold(folder, k)
t0 = time.time()
if saved is not None and saved.exists():
    loaded = load_finder(saved)
else:
    loaded = fit_finder(train, [], FinderTrainSettings(steps=args.steps), fold=k, folds=5)
    if saved is not None:
        save_finder(saved, loaded.net, loaded.card)
print("finder ready", round(time.time() - t0), "s", flush=True)
finder = LearnedFinder("", preloaded=loaded)
result = {"fold": k, "steps": loaded.card.training.get("steps"), "held_out": [d.name for d in test]}
t0 = time.time()
result["plain"] = score(finder, [finder.maps(d.raw) for d in test], test)
result["plain"]["seconds"] = round(time.time() - t0, 1)
print("plain", result["plain"], flush=True)
t0 = time.time()
augmented = LearnedFinder("", preloaded=loaded, views=8)  # the product's --finder-views 8
result["augmented_8_views"] = score(finder, [augmented.maps(d.raw) for d in test], test)
result["augmented_8_views"]["seconds"] = round(time.time() - t0, 1)
print("augmented", result["augmented_8_views"], flush=True)
out_path.write_text(json.dumps(result, indent=1))
