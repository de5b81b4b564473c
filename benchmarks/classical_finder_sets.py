"""The classical finder's settings side by side on synthetic fields and real micrographs, per class.

Each set is rendered in memory from ``synth --micrographs`` arguments (``NAME=PROBLEM:COUNT:SIDE:N:SEED``
with optional ``:PROPORTIONS`` as ``0.6/0.35/0.05``), or read from an outlined folder
(``NAME=DIR`` with images/, instances/ and particles.csv, such as ../shared/data/nanoshapes-micrographs).
Every variant (``NAME={json ClassicalFinder keywords}``) runs on every micrograph; matches are at IoU >= 0.5.
Reported per set and variant: precision, recall, F1, mean IoU, |count error| per micrograph, the
outlined particles found per class, those cut by the micrograph's edge found, and the finder's seconds.
With ``--window``, each synthetic micrograph is cut to rows ``side/5 .. side - side/7`` and the columns
17 px to the right of those: the new edges cut particles (the generator places none across its own).

    python benchmarks/classical_finder_sets.py --set e1=encapsulation:2:1536:40:81:0.6/0.35/0.05 \\
        --set ns=../shared/data/nanoshapes-micrographs --variant 'before={"find_rings": false}' \\
        --variant 'now={}' --json out.json
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import time
from pathlib import Path

import tifffile

from emclassify.bench import machine_description
from emclassify.finding.classical import ClassicalFinder
from emclassify.finding.matching import match_instances, summarise
from emclassify.synth import render_micrograph


def synthetic(spec: str, window: bool = False):
    """(image, labels, {label: class}) per micrograph of ``PROBLEM:COUNT:SIDE:N:SEED[:PROPORTIONS]``
    (``window``: cut as the module doc says)."""
    parts = spec.split(":")
    problem, count, side, n, seed = parts[0], *map(int, parts[1:5])
    proportions = [float(p) for p in parts[5].split("/")] if len(parts) > 5 else None
    for i in range(count):
        m = render_micrograph(problem, seed, i, side=side, n=n, proportions=proportions)
        image, labels = m.image, m.labels
        classes = {p["particle"]: p["label"] for p in m.particles}
        if window:
            import numpy as np

            a, b = side // 5, side - side // 7
            image, labels = image[a:b, a + 17:b + 17], labels[a:b, a + 17:b + 17]
            inside = set(int(k) for k in np.unique(labels)) - {0}
            classes = {k: c for k, c in classes.items() if k in inside}
        yield m.name, image, labels, classes


def cut_by_edge(labels):
    """The labels of the outlined particles touching the micrograph's edge."""
    import numpy as np

    return set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))) - {0}


def outlined(folder: Path):
    classes = collections.defaultdict(dict)
    with open(folder / "particles.csv", newline="") as f:
        for row in csv.DictReader(f):
            classes[Path(row["micrograph"]).stem][int(row["particle"])] = row["label"]
    for path in sorted((folder / "images").glob("*.tif")):
        yield path.stem, tifffile.imread(path), tifffile.imread(folder / "instances" / path.name), classes[path.stem]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", action="append", required=True, help="NAME=PROBLEM:COUNT:SIDE:N:SEED[:P1/P2/P3] or NAME=DIR")
    ap.add_argument("--variant", action="append", required=True, help='NAME={"keyword": value, ...}')
    ap.add_argument("--window", action="store_true", help="cut each synthetic micrograph so that its edges cut particles")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = {name: json.loads(kw) for name, kw in (v.split("=", 1) for v in args.variant)}
    results = {}
    for entry in args.set:
        name, spec = entry.split("=", 1)
        micrographs = list(outlined(Path(spec)) if Path(spec).is_dir() else synthetic(spec, args.window))
        at_edge = sum(len(cut_by_edge(labels)) for _, _, labels, _ in micrographs)
        per_class_total = collections.Counter(c for *_, classes in micrographs for c in classes.values())
        results[name] = {"spec": spec, "outlined_by_class": dict(per_class_total)}
        for vname, kw in variants.items():
            finder = ClassicalFinder(**kw)
            matches, found_by_class, seconds, edge_found = [], collections.Counter(), 0.0, 0
            for _, image, labels, classes in micrographs:
                t0 = time.perf_counter()
                det = finder.find(image)
                seconds += time.perf_counter() - t0
                m = match_instances(det.labels, labels)
                matches.append(m)
                found_by_class.update(classes[t] for _, t, _ in m.pairs)
                edge_found += len({t for _, t, _ in m.pairs} & cut_by_edge(labels))
            s = summarise(matches)
            row = {k: s[k] for k in ("precision", "recall", "f1", "mean_iou", "count_error_abs_mean", "found", "matched")}
            row.update(found_by_class=dict(found_by_class), cut_by_edge_found=edge_found, cut_by_edge=at_edge,
                       seconds=round(seconds, 2))
            results[name][vname] = row
            print(f"{name:>6} {vname:>8}: F1 {s['f1']:.3f} P {s['precision']:.3f} R {s['recall']:.3f} "
                  f"IoU {s['mean_iou'] or 0:.3f} |count err| {s['count_error_abs_mean']:.1f} | "
                  + " ".join(f"{c} {found_by_class[c]}/{per_class_total[c]}" for c in per_class_total)
                  + f" | cut by the edge {edge_found}/{at_edge} | {seconds:.1f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(), "date": time.strftime("%Y-%m-%d"),
                                         "window": args.window, "variants": variants, "sets": results}, indent=1))


if __name__ == "__main__":
    main()
