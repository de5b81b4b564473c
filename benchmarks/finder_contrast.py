"""Micrographs of the other contrast: what the finders find in them, and whether a count tells.

Each micrograph is run as it is and inverted, by the classical finder (``polarity`` dark) and by
learned finders, and matched against its outlines (IoU >= 0.5). For the learned finders, the count
of particles the network finds (one view, the card's cuts) is what a check "more particles inverted
than as given" would compare (BENCHMARKS.md "Particles of the other contrast").

    python benchmarks/finder_contrast.py ../shared/data/nanoshapes-micrographs --fold-finders DIR \\
        [--also FINDER FOLDER ...] --json out.json

``--fold-finders DIR``: ``finder-K.safetensors`` of ``find-eval --folds 5`` (seed 0), each run on the
micrographs it did not train on. ``--also FINDER FOLDER``: a finder and outlined micrographs it did
not train on (e.g. a finder trained on ``emclassify synth --micrographs`` fields, and other fields).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from emclassify.bench import machine_description
from emclassify.finding.classical import ClassicalFinder
from emclassify.finding.evaluate import micrograph_folds, outlined_micrographs
from emclassify.finding.finderfile import load_finder
from emclassify.finding.learned import LearnedFinder, instances_from_maps
from emclassify.finding.matching import match_instances
from emclassify.finding.training import load_outlined
from emclassify.finding.unet import predict_maps


def network_count(finder: LearnedFinder, image: np.ndarray, invert: bool) -> int:
    card = finder.loaded.card
    fg, centre = predict_maps(finder.loaded.net, finder.network_input(image, invert=invert), views=1)
    return len(instances_from_maps(fg, centre, card.foreground_threshold, card.seed_threshold,
                                   card.min_area_px, card.peak_threshold)[1])


def rows_for(finder: LearnedFinder, data, label: str):
    rows = []
    for d in data:
        raw = d.raw.astype(np.float32)
        row = {"set": label, "micrograph": d.name, "outlined": int(len(np.unique(d.labels)) - 1)}
        for key, img in (("as_given", raw), ("inverted", -raw)):
            learned = match_instances(finder.find(img).labels, d.labels)
            classical = match_instances(ClassicalFinder().find(img).labels, d.labels)
            row[key] = {"learned_found": learned.n_found, "learned_matched": learned.tp,
                        "network_count": network_count(finder, img, False),
                        "network_count_inverted": network_count(finder, img, True),
                        "classical_found": classical.n_found, "classical_matched": classical.tp}
        rows.append(row)
        a, b = row["as_given"], row["inverted"]
        print(f"{label:10s} {Path(d.name).stem:22s} outlined {row['outlined']:4d} | as given: learned "
              f"{a['learned_matched']}/{a['learned_found']}, classical {a['classical_matched']}/{a['classical_found']}, "
              f"network inverted/as given {a['network_count_inverted']}/{a['network_count']} | inverted: learned "
              f"{b['learned_matched']}/{b['learned_found']}, classical {b['classical_matched']}/{b['classical_found']}")
    return rows


def ratio_range(rows, key):
    r = [x[key]["network_count_inverted"] / max(1, x[key]["network_count"]) for x in rows]
    return [round(min(r), 3), round(max(r), 3)] if r else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--fold-finders", type=Path, required=True)
    ap.add_argument("--also", nargs=2, action="append", default=[], metavar=("FINDER", "FOLDER"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t0 = time.time()
    data, _ = load_outlined(outlined_micrographs(args.folder), args.folder)
    rows = []
    for k, test_idx in enumerate(micrograph_folds(len(data), 5, 0)):
        finder = LearnedFinder("", preloaded=load_finder(args.fold_finders / f"finder-{k}.safetensors"))
        rows += rows_for(finder, [data[i] for i in test_idx], f"fold {k + 1}")
    sets = {"nanoshapes": rows}
    for finder_path, folder in args.also:
        folder = Path(folder)
        extra, _ = load_outlined(outlined_micrographs(folder), folder)
        sets[folder.name] = rows_for(LearnedFinder(finder_path), extra, folder.name[:10])
    summary = {name: {"micrographs": len(r),
                      "network_inverted_over_as_given": {"as_given": ratio_range(r, "as_given"),
                                                         "inverted": ratio_range(r, "inverted")},
                      **{f"{key}_{what}": int(sum(x[key][what] for x in r))
                         for key in ("as_given", "inverted") for what in ("learned_matched", "classical_matched")},
                      "outlined": int(sum(x["outlined"] for x in r))} for name, r in sets.items()}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine_description(), "command": "python benchmarks/finder_contrast.py "
                                         f"{args.folder} --fold-finders {args.fold_finders} " + " ".join(
                                             f"--also {a} {b}" for a, b in args.also),
                                         "seconds": round(time.time() - t0, 1), "summary": summary, "rows": sets}, indent=1))


if __name__ == "__main__":
    main()
