"""Diagnostic (not a result): does a "not a particle" class in the classifier on found particles
raise the end-to-end score, by dropping false detections at classification?

    python benchmarks/finder_reject_class.py ../shared/data/nanoshapes-micrographs 3 out.json finder.safetensors

On CV fold K (the split of find-eval --folds 5), with the fold's finder (loaded from the file, or
trained with the defaults and saved there), trains two classifiers with ``train``'s defaults on the
particles the finder finds in the fold's training micrographs, exactly as ``find-eval
--train-classifier`` does: (a) the matched particles with their outlined class (what find-eval
does); (b) the same plus every found particle that matches no outlined particle, labelled
``not-a-particle``. On the held-out micrographs, both are scored end to end against the outlines
(:func:`emclassify.finding.evaluate.end_to_end_scores` over the outlined classes only, so a
particle predicted ``not-a-particle`` is dropped: it is neither a true nor a false positive, and
its outlined particle, if any, counts as missed). Then (b) again, dropping a particle only where
P(not-a-particle) reaches each of ``--thresholds``, the others taking their likeliest real class.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from emclassify.finding.evaluate import (classify_found, end_to_end_scores, found_crop_context, matched_classes,
                                         outlined_classes)
from emclassify.finding.finderfile import load_finder, save_finder
from emclassify.finding.learned import LearnedFinder
from emclassify.finding.matching import match_instances
from emclassify.finding.training import FinderTrainSettings, fit_finder
from emclassify.inference import Classifier
from emclassify.input_decision import decide_preprocess
from emclassify.io import load_dataset
from emclassify.micrographs import CropWriter
from emclassify.preprocess import MIN_REGION_SIDE
from emclassify.training import TrainConfig, train as train_classifier
from outlined_fold import found_probabilities, load_fold

REJECT = "not-a-particle"

ap = argparse.ArgumentParser()
ap.add_argument("folder", type=Path)
ap.add_argument("fold", type=int)
ap.add_argument("out", type=Path)
ap.add_argument("finder", type=Path)
ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9],
                help="also score dropping a particle only when P(not-a-particle) reaches each of these")
args = ap.parse_args()
k = args.fold
train, test, truths = load_fold(args.folder, k)
if args.finder.exists():
    loaded = load_finder(args.finder)
else:
    loaded = fit_finder(train, [], FinderTrainSettings(), fold=k, folds=5)
    save_finder(args.finder, loaded.net, loaded.card)
finder = LearnedFinder("", preloaded=loaded)
context = found_crop_context(loaded.card.median_diameter_px)


found = [(d, finder.find(d.raw)) for d in train]
result = {"fold": k, "held_out": [d.name for d in test], "finder_steps": loaded.card.training.get("steps"),
          "context_px": context}
with tempfile.TemporaryDirectory() as work:
    classifiers = {}
    for with_reject in (False, True):
        root = Path(work) / ("reject" if with_reject else "plain")
        writer, counts = CropWriter(root), {}
        for d, det in found:
            match = match_instances(det.labels, d.labels)
            labelled = matched_classes(match, det, outlined_classes(d, truths))
            if with_reject:
                paired = {f for f, _, _ in match.pairs}
                labelled += [(p, REJECT) for p in det.particles if p.index not in paired]
            labelled = [(p, c) for p, c in labelled if min(p.width, p.height) >= MIN_REGION_SIDE]
            for _, c in labelled:
                counts[c] = counts.get(c, 0) + 1
            writer.add_labelled(d.name, d.raw, det, labelled, context)
        writer.close()
        ds = load_dataset(root)
        pcfg, decision = decide_preprocess(ds.samples)
        t0 = time.time()
        train_classifier(ds, pcfg, TrainConfig(), root / "classifier.safetensors", input_decision=decision)
        name = "with not-a-particle" if with_reject else "matched only (find-eval)"
        classifiers[name] = Classifier.from_file(root / "classifier.safetensors", device="cpu")
        result[name] = {"training_counts": counts, "training_seconds": round(time.time() - t0)}
        print(name, counts, round(time.time() - t0), "s", flush=True)
    classes = sorted(set(truths.values()))
    held = [(d, finder.find(d.raw)) for d in test]
    for name, clf in classifiers.items():
        records, dropped = [], 0
        for d, det in held:
            predicted = classify_found(d.raw, det, clf)
            dropped += sum(p == REJECT for p in predicted.values())
            records.append((match_instances(det.labels, d.labels), predicted, outlined_classes(d, truths)))
        result[name]["end_to_end"] = end_to_end_scores(records, classes)
        result[name]["found"] = sum(len(det.particles) for _, det in held)
        result[name]["dropped_as_not_a_particle"] = dropped
        print(name, result[name]["end_to_end"]["macro_f1"], result[name]["end_to_end"]["per_class_f1"],
              "dropped", dropped, flush=True)
    # a particle is dropped only when P(not-a-particle) reaches t; the others get their likeliest real class
    clf = classifiers["with not-a-particle"]
    names = list(clf.classes)
    reject = names.index(REJECT)
    probs = [(d, det, found_probabilities(d.raw, det, clf)) for d, det in held]
    for t in args.thresholds:
        records, dropped = [], 0
        for d, det, pr in probs:
            predicted = {}
            for i, p in pr.items():
                if p[reject] >= t:
                    predicted[i], dropped = REJECT, dropped + 1
                else:
                    real = p.copy()
                    real[reject] = -1.0
                    predicted[i] = names[int(np.argmax(real))]
            records.append((match_instances(det.labels, d.labels), predicted, outlined_classes(d, truths)))
        e = end_to_end_scores(records, classes)
        result[f"with not-a-particle, dropped at P >= {t:g}"] = {"end_to_end": e, "dropped_as_not_a_particle": dropped}
        print(f"P(not-a-particle) >= {t:g}: {e['macro_f1']:.4f} {e['per_class_f1']} dropped {dropped}", flush=True)
args.out.write_text(json.dumps(result, indent=1))
