"""Micrograph throughput: seconds per megapixel of each finder alone and of the whole micrograph
run (decode, find, cut out, classify, write CSV + summary), side by side in one run; where the
micrographs have instance labels (``instances/`` beside ``images/``: the synthetic ones, NanoShapes),
also each finder's F1 against them, untimed, so that a speed-up from searching at a wrong scale shows.

    python benchmarks/micrograph_throughput.py [--side 4096] [--n 2] [--per 300] [--json OUT]
        [--finder-model finder.safetensors]   # also the learned finder (native, reference, 8 views)
        [--folder DIR] [--model classifier.safetensors]

Micrographs are synthetic (``emclassify.synth.render_micrograph``: sparse liposomes, ~30 %
touching), or with ``--folder`` the micrographs in DIR (e.g. the NanoShapes micrographs: dense,
small particles, where the classical finder works at full resolution); the bundled model classifies,
or ``--model``. The classical finder runs twice, with the native median, reconstruction and distance transform and with
SciPy's and scikit-image's (``native=False``, the same particles), alone and end to end. Prints a
Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--per", type=int, default=300)
    ap.add_argument("--json")
    ap.add_argument("--finder-model", help="a learned finder's model file: time it too")
    ap.add_argument("--folder", help="time these micrographs instead of synthetic ones")
    ap.add_argument("--model", help="the classifier of the end-to-end rows (default: the bundled model)")
    args = ap.parse_args()
    import resource

    from emclassify.batch import run_batch
    from emclassify.finding import make_finder
    from emclassify.finding.matching import match_instances, summarise
    from emclassify.io import read_image
    from emclassify.synth import generate_micrographs

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.folder:
            folder = Path(args.folder)
        else:
            folder = root / "m" / "images"
            generate_micrographs(root / "m", "lamellarity", args.n, seed=11, side=args.side, per_micrograph=args.per)
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".tif", ".tiff"))
        mpx = sum(read_image(f).array.size for f in files) / 1e6
        rows, result, quality = [], {}, {}
        finders = [("classical (native median, reconstruction and distance transform)", make_finder("classical"), None),
                   ("classical (SciPy and scikit-image)", make_finder("classical", native=False), None)]
        if args.finder_model:
            finders += [("learned (native conv blocks)", make_finder("learned", model=args.finder_model), None),
                        ("learned (PyTorch reference)", make_finder("learned", model=args.finder_model, native=False),
                         False),
                        ("learned, 8 views (native conv blocks)",
                         make_finder("learned", model=args.finder_model, views=8), None)]
        finders[0][1].find(read_image(files[0]).array)  # untimed: imports and first-call costs
        truths = {f: folder.parent / "instances" / f.name for f in files}
        truths = {f: t for f, t in truths.items() if t.exists()}
        for label, finder, _ in finders:
            t_find, found, matches = 0.0, 0, []
            for f in files:
                t = time.perf_counter()
                det = finder.find(read_image(f).array)
                t_find += time.perf_counter() - t
                found += len(det)
                if f in truths:  # untimed: how well it found them, so that a speed-up is not a wrong scale
                    matches.append(match_instances(det.labels, read_image(truths[f]).array))
            rows.append((f"{label} finder alone (decode + find)", t_find, found))
            if matches:
                quality[rows[-1][0]] = {k: summarise(matches)[k] for k in ("f1", "precision", "recall", "mean_iou")}
        for label, finder, native in finders:
            if native is False:
                continue
            # a fresh feature cache: every end-to-end row computes its particles' features (they are the same particles)
            os.environ["EMCLASSIFY_CACHE"] = str(root / f"cache-{len(rows)}")
            t = time.perf_counter()
            out = run_batch(folder, model=args.model, out=root / f"out-{len(rows)}.csv", finder=finder)
            t_all = time.perf_counter() - t
            rows.append((f"end to end, {label} (`batch --micrographs`: decode, find, cut, classify, write)", t_all,
                         sum(r.particle is not None for r in out.results)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from emclassify.bench import machine_description

    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
              "command": "python benchmarks/micrograph_throughput.py " + " ".join(sys.argv[1:]),
              "cpus": os.cpu_count(), "micrographs": len(files),
              "folder": args.folder or f"synthetic, {args.n} x {args.side} px, {args.per} per micrograph",
              "model": args.model or "bundled",
              "megapixels": round(mpx, 2), "peak_rss_mb": round(peak_mb),
              "steps": [{"step": label, "s_per_mpx": round(t / mpx, 3), "mpx_per_s": round(mpx / t, 3),
                         "particles": n, **({"found_vs_outlined": quality[label]} if label in quality else {})}
                        for label, t, n in rows]}
    print("| step | s / megapixel | megapixel / s | particles | F1 against the outlines |\n|---|---|---|---|---|")
    for label, t, n in rows:
        f1 = f"{quality[label]['f1']:.3f}" if label in quality else "–"
        print(f"| {label} | {t / mpx:.3f} | {mpx / t:.2f} | {n} | {f1} |")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
