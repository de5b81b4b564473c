"""Micrograph throughput: seconds per megapixel of the classical finder alone and of the whole
micrograph run (decode, find, cut out, classify, write CSV + summary), side by side in one run.

    python benchmarks/micrograph_throughput.py [--side 4096] [--n 2] [--per 300] [--json OUT]

Micrographs are synthetic (``emclassify.synth.render_micrograph``: sparse liposomes, ~30 %
touching); the bundled model classifies. Prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
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
    args = ap.parse_args()
    import resource

    from emclassify.batch import run_batch
    from emclassify.finding import make_finder
    from emclassify.io import read_image
    from emclassify.synth import generate_micrographs

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_micrographs(root / "m", "lamellarity", args.n, seed=11, side=args.side, per_micrograph=args.per)
        files = sorted((root / "m" / "images").glob("*.tif"))
        mpx = sum(read_image(f).array.size for f in files) / 1e6
        finder = make_finder("classical")
        t = time.perf_counter()
        found = sum(len(finder.find(read_image(f).array)) for f in files)
        t_find = time.perf_counter() - t
        t = time.perf_counter()
        out = run_batch(root / "m" / "images", out=root / "out.csv", finder=make_finder("classical"))
        t_all = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "cpus": __import__("os").cpu_count(), "micrographs": args.n, "side_px": args.side,
              "megapixels": round(mpx, 2), "particles_found": found,
              "finder_s_per_mpx": round(t_find / mpx, 3), "end_to_end_s_per_mpx": round(t_all / mpx, 3),
              "end_to_end_mpx_per_s": round(mpx / t_all, 3), "rows": len(out.results), "peak_rss_mb": round(peak_mb)}
    print("| step | s / megapixel | megapixel / s |\n|---|---|---|")
    print(f"| classical finder alone (decode + find) | {t_find / mpx:.3f} | {mpx / t_find:.2f} |")
    print(f"| end to end (`batch --micrographs`: decode, find, cut, classify, write) | {t_all / mpx:.3f} | "
          f"{mpx / t_all:.2f} |")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
