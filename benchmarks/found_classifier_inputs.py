"""Which input mode for the classifier of found particles: end to end on held-out micrographs
(BENCHMARKS.md, "The found-particle classifier's input").

    python benchmarks/found_classifier_inputs.py ../shared/data/nanoshapes-micrographs WORKDIR \\
        [--variants crop surround mask crop,seed=1 crop,size=48 ...] [--on-training] [--json OUT]

WORKDIR holds ``finder-K.safetensors`` and the held-out maps ``maps-K-<name>.npz`` per fold, as
``benchmarks/finder_errors.py WORKDIR`` leaves them (same folds, seed 0). Per fold, the particles
each finder finds in its training micrographs are written once as ``find-eval --train-classifier``
writes them (``crops-K``), and one classifier per variant is trained on them with ``train``'s
defaults but the variant's input mode and, after commas, ``seed=`` (training seed) or ``size=``
(input side, px) (``classifier-VARIANT-K.safetensors``; ``crop`` is what ``auto`` chooses for
masked images, so it is the product's; ``crop,seed=1`` shows what retraining alone moves). Every
classifier then classifies the same found particles of the held-out micrographs; scored as
``find-eval`` scores end to end. The probabilities of every pair of variants averaged are scored
too, and, as a bound, each classifier on the outlined particles themselves cut out as if found (a
perfect finder). Files already in WORKDIR are reused.

``--on-training`` scores each fold's finder and classifiers on the micrographs they were trained on
instead: optimistic by design, it shows what the pair can do on particles it has seen.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from outlined_fold import found_probabilities, write_result


def main() -> int:
    from emclassify.finding.evaluate import (end_to_end_scores, found_crop_context, micrograph_folds, outlined_as_found,
                                             outlined_classes, outlined_micrographs, truth_classes,
                                             write_found_training_crops)
    from emclassify.finding.finderfile import load_finder
    from emclassify.finding.learned import LearnedFinder
    from emclassify.finding.matching import match_instances
    from emclassify.finding.training import load_outlined
    from emclassify.inference import Classifier
    from emclassify.input_decision import decide_preprocess
    from emclassify.io import load_dataset
    from emclassify.training import TrainConfig, train

    ap = argparse.ArgumentParser()
    ap.add_argument("micrographs")
    ap.add_argument("workdir")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=["crop", "surround", "mask"])
    ap.add_argument("--on-training", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    folder, work = Path(args.micrographs), Path(args.workdir)
    pairs = outlined_micrographs(folder)
    data, _ = load_outlined(pairs, folder)
    truths = truth_classes(folder, pairs)
    parts = micrograph_folds(len(data), args.folds, 0)
    probs = {m: [] for m in args.variants}   # per micrograph: found index -> probabilities
    records = []                          # per micrograph: (match, truth)
    perfect = {m: [] for m in args.variants}  # the same on the outlines: (match, probabilities, truth)
    classes = None
    seconds = {m: [] for m in args.variants}
    for k, test_idx in enumerate(parts):
        loaded = load_finder(work / f"finder-{k}.safetensors")
        finder = LearnedFinder("", preloaded=loaded)
        train_set = [data[i] for i in range(len(data)) if i not in set(test_idx)]
        crops = work / f"crops-{k}"
        if not (crops / "manifest.csv").exists():
            write_found_training_crops(train_set, finder, truths, crops, found_crop_context(loaded.card.median_diameter_px))
        classifiers = {}
        for mode in args.variants:
            path = work / f"classifier-{mode.replace(',', '-').replace('=', '')}-{k}.safetensors"
            if not path.exists():
                ds = load_dataset(crops)
                name, *options = mode.split(",")
                options = {o.split("=")[0]: int(o.split("=")[1]) for o in options}
                pcfg, decision = decide_preprocess(ds.samples, mode=name, **{o: v for o, v in options.items() if o == "size"})
                t0 = time.perf_counter()
                train(ds, pcfg, TrainConfig(**{o: v for o, v in options.items() if o == "seed"}), path,
                      input_decision=decision)
                seconds[mode].append(round(time.perf_counter() - t0, 1))
                print(f"fold {k + 1}: {mode} classifier trained in {seconds[mode][-1]:.0f} s", flush=True)
            classifiers[mode] = Classifier.from_file(path, device="cpu")
        classes = list(classifiers[args.variants[0]].classes)
        for d in (train_set if args.on_training else [data[i] for i in test_idx]):
            if args.on_training:
                det = finder.find(d.raw)
            else:
                z = np.load(work / f"maps-{k}-{Path(d.name).stem}.npz")
                det = finder.detections(z["fg"], z["centre"])
            records.append((match_instances(det.labels, d.labels), outlined_classes(d, truths)))
            outlined, perfect_match = outlined_as_found(d.labels)
            for mode, clf in classifiers.items():
                assert list(clf.classes) == classes
                probs[mode].append(found_probabilities(d.raw, det, clf))
                perfect[mode].append((perfect_match, found_probabilities(d.raw, outlined, clf),
                                      outlined_classes(d, truths)))

    def scored(per_micrograph, matched=None):
        recs = [(m, {f: classes[int(np.argmax(p))] for f, p in pr.items()}, t)
                for (m, t), pr in zip(matched or records, per_micrograph)]
        e = end_to_end_scores(recs, classes)
        return {k: e[k] for k in ("macro_f1", "per_class_f1", "matched_accuracy", "matched_per_class_f1")}

    results = {mode: scored(probs[mode]) for mode in args.variants}
    for a, b in itertools.combinations(args.variants, 2):
        averaged = [{f: (pa[f] + pb[f]) / 2 for f in pa if f in pb} for pa, pb in zip(probs[a], probs[b])]
        results[f"{a}+{b} averaged"] = scored(averaged)
    for mode in args.variants:
        results[f"{mode} on the outlined particles"] = scored([p for _, p, _ in perfect[mode]],
                                                              [(m, t) for m, _, t in perfect[mode]])
    write_result("found_classifier_inputs.py", {"training_seconds": seconds, "results": results}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
