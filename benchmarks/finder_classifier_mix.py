"""Diagnostic (not a result): which classifier of found particles scores best end to end on one
cross-validation fold of outlined micrographs?

    python benchmarks/finder_classifier_mix.py ../shared/data/nanoshapes-micrographs \\
        ../shared/data/nanoshapes 2 out.json finder.safetensors

On fold K (the split of ``find-eval --folds 5``), with the fold's learned finder (loaded from the
file, or trained with the defaults and saved there), four classifiers, each with ``train``'s
defaults, only on the fold's training micrographs:
- ``found``: the particles the finder finds, labelled by the outlines they match (what
  ``find-eval --train-classifier`` trains);
- ``curated``: the curated crops of those micrographs (CROPS, a particle-image dataset whose
  ``group`` is the micrograph name, e.g. NanoShapes; what ``finder_cv.py --crops`` trains);
- ``found + curated``: both sets in one training set;
- ``mean of found and curated``: the two first, their class probabilities averaged per particle.
All are scored end to end on the held-out micrographs against the outlines
(:func:`emclassify.finding.evaluate.end_to_end_scores`).
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from emclassify.finding.evaluate import end_to_end_scores, found_crop_context, matched_classes, outlined_classes
from emclassify.finding.finderfile import load_finder, save_finder
from emclassify.finding.learned import LearnedFinder
from emclassify.finding.matching import match_instances
from emclassify.finding.training import FinderTrainSettings, fit_finder
from emclassify.inference import Classifier
from emclassify.input_decision import decide_preprocess
from emclassify.io import Dataset, load_dataset
from emclassify.micrographs import CropWriter
from emclassify.preprocess import MIN_REGION_SIDE
from emclassify.training import TrainConfig, train as train_classifier
from outlined_fold import found_probabilities, load_fold


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("crops", type=Path)
    ap.add_argument("fold", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("finder", type=Path)
    ap.add_argument("--steps", type=int, default=FinderTrainSettings().steps, help="finder steps (a smoke test: 5)")
    ap.add_argument("--epochs", default="auto", help="classifier epochs (a smoke test: 1)")
    args = ap.parse_args()
    k = args.fold
    train, test, truths = load_fold(args.folder, k)
    t0 = time.time()
    if args.finder.exists():
        loaded = load_finder(args.finder)
    else:
        loaded = fit_finder(train, [], FinderTrainSettings(steps=args.steps), fold=k, folds=5)
        save_finder(args.finder, loaded.net, loaded.card)
    print(f"finder ready ({time.time() - t0:.0f} s)", flush=True)
    finder = LearnedFinder("", preloaded=loaded)
    context = found_crop_context(loaded.card.median_diameter_px)
    result = {"fold": k, "held_out": [d.name for d in test], "finder_steps": loaded.card.training.get("steps"),
              "peak_threshold": loaded.card.peak_threshold, "context_px": context}
    classes = sorted(set(truths.values()))
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "found"
        writer = CropWriter(root)
        for d in train:
            det = finder.find(d.raw)
            labelled = matched_classes(match_instances(det.labels, d.labels), det, outlined_classes(d, truths))
            writer.add_labelled(d.name, d.raw, det,
                                [(p, c) for p, c in labelled if min(p.width, p.height) >= MIN_REGION_SIDE], context)
        writer.close()
        found = load_dataset(root)
        full = load_dataset(args.crops)
        groups = {Path(d.name).stem for d in train}
        curated = [s for s in full.samples if s.group in groups]
        sets = {"found": found.samples, "curated": curated, "found + curated": found.samples + curated}
        classifiers = {}
        for name, samples in sets.items():
            ds = Dataset(root, samples, found.classes, found.source, class_order=found.class_order)
            pcfg, decision = decide_preprocess(ds.samples)
            out = Path(work) / f"{name.replace(' + ', '-')}.safetensors"
            t0 = time.time()
            cfg = TrainConfig() if args.epochs == "auto" else TrainConfig(epochs=int(args.epochs))
            train_classifier(ds, pcfg, cfg, out, input_decision=decision)
            classifiers[name] = Classifier.from_file(out, device="cpu")
            result[name] = {"training_particles": len(samples), "training_seconds": round(time.time() - t0)}
            print(f"{name}: {len(samples)} particles, {time.time() - t0:.0f} s", flush=True)
        records = {name: [] for name in [*classifiers, "mean of found and curated"]}
        for d in test:
            det = finder.find(d.raw)
            match = match_instances(det.labels, d.labels)
            truth = outlined_classes(d, truths)
            probs = {name: found_probabilities(d.raw, det, clf) for name, clf in classifiers.items()}
            for name, clf in classifiers.items():
                names = clf.classes
                records[name].append((match, {i: names[int(np.argmax(p))] for i, p in probs[name].items()}, truth))
            a, b = classifiers["found"].classes, classifiers["curated"].classes
            assert list(a) == list(b), (a, b)
            both = {i: a[int(np.argmax(p + probs["curated"][i]))] for i, p in probs["found"].items()
                    if i in probs["curated"]}
            records["mean of found and curated"].append((match, both, truth))
        for name, recs in records.items():
            e = end_to_end_scores(recs, classes)
            result.setdefault(name, {})["end_to_end"] = e
            print(f"{name:28s} end to end {e['macro_f1']:.4f}  matched accuracy {e['matched_accuracy']:.4f}  "
                  f"{e['per_class_f1']}", flush=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
