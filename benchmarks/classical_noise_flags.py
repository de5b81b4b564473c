"""Which micrographs the classical finder flags as in doubt: fields of noise against real and synthetic
ones (BENCHMARKS.md "Fields of noise").

    python benchmarks/classical_noise_flags.py --noise gauss:100:10 --noise poisson:3 --noise smooth:2 \\
        --sides 256,512,1024,2048 --seeds 0,1,2 [--outlined ../shared/data/nanoshapes-micrographs] \\
        [--set lamellarity:3:1536:40:11 ...] [--window] --json out.json

Noise fields: ``gauss:MEAN:SD``, ``poisson:LAMBDA``, ``uniform:LO:HI``, ``smooth:SIGMA`` (Gaussian noise
of sd 10 smoothed by SIGMA px: an empty carbon area), each ``side`` x ``side`` px, drawn from
``numpy.random.default_rng([seed, side, index of the kind])``. Synthetic sets as in
``classical_finder_sets.py`` (``PROBLEM:COUNT:SIDE:N:SEED[:PROPORTIONS]``; ``--window`` also runs each
field cut so that its edges cut particles). Per micrograph: particles kept, and which warning put them in
doubt: ``faint`` (:func:`emclassify.finding.classical.faint_warning`), ``rescued``
(:func:`~emclassify.finding.classical.rescued_warning`) or none.
"""
from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from classical_finder_sets import outlined, synthetic
from emclassify.bench import machine_description
from emclassify.finding.classical import ClassicalFinder


def noise_field(kind: str, side: int, seed: int, index: int) -> np.ndarray:
    name, *params = kind.split(":")
    rng = np.random.default_rng([seed, side, index])
    p = [float(v) for v in params]
    if name == "gauss":
        return rng.normal(p[0], p[1], (side, side))
    if name == "poisson":
        return rng.poisson(p[0], (side, side)).astype(np.float64)
    if name == "uniform":
        return rng.uniform(p[0], p[1], (side, side))
    if name == "smooth":
        return ndimage.gaussian_filter(rng.normal(100, 10, (side, side)), p[0])
    raise SystemExit(f"unknown noise kind {kind!r}")


def flag_of(det) -> str:
    if not det.warnings:
        return "none"
    return "rescued" if any("kept only for their sharp edges" in w for w in det.warnings) else "faint"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noise", action="append", default=[])
    ap.add_argument("--sides", default="256,512,1024")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--outlined", action="append", default=[], help="folders of real outlined micrographs")
    ap.add_argument("--set", action="append", default=[], help="synthetic sets, PROBLEM:COUNT:SIDE:N:SEED[:PROPORTIONS]")
    ap.add_argument("--window", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    finder = ClassicalFinder()
    rows = []

    def run(kind: str, name: str, image) -> None:
        t = time.perf_counter()
        det = finder.find(np.asarray(image, np.float32))
        rows.append({"kind": kind, "name": name, "particles": len(det.particles), "flag": flag_of(det),
                     "warnings": det.warnings, "seconds": round(time.perf_counter() - t, 2)})
        print(f"{kind:9s} {name:48s} {len(det.particles):5d} kept  flag {rows[-1]['flag']}", flush=True)

    for side in (int(s) for s in args.sides.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            for index, kind in enumerate(args.noise):
                run("noise", f"{kind} {side} seed {seed}", noise_field(kind, side, seed, index))
    for folder in args.outlined:
        for name, image, _labels, _classes in outlined(Path(folder)):
            run("real", name, image)
    for spec in args.set:
        for name, image, _labels, _classes in synthetic(spec):
            run("synthetic", f"{spec} {name}", image)
        if args.window:
            for name, image, _labels, _classes in synthetic(spec, window=True):
                run("windowed", f"{spec} {name}", image)
    counts = collections.Counter((r["kind"], r["flag"]) for r in rows)
    summary = {kind: {flag: counts[(kind, flag)] for flag in ("none", "faint", "rescued")}
               for kind in dict.fromkeys(r["kind"] for r in rows)}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
                                               "args": vars(args), "summary": summary, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
