"""Do the finders tell their own kind of micrograph from noise? (BENCHMARKS.md, "Particles unlike the
finder's own").

    python benchmarks/finder_score_floor.py ../shared/data/nanoshapes-micrographs WORKDIR [--json OUT]

The classical finder first: on every outlined micrograph and on the noise fields below (seeds 0-2),
the objects it kept and those it dropped as too faint, its F1 against the outlines, and whether
:func:`emclassify.finding.classical.faint_warning` flags it. Then the learned finders:

WORKDIR holds one finder per fold, ``finder-K.safetensors``, as ``benchmarks/finder_errors.py``
leaves them (trained on the fold's training micrographs; their cards name them). For each finder:
the detection-score reference that ``train-finder`` records on the card
(:func:`emclassify.finding.training.detection_score_reference`: 5th percentile and median of the
scores of the particles it finds on its own micrographs), computed here on its training
micrographs; the median score of each held-out micrograph's particles; and the same on three
fields of noise (1024 x 1024, seeded): Gaussian float32, Poisson 16-bit at 3 counts per pixel, and
Gaussian noise smoothed over 4 px. A micrograph is flagged when its median is under the 5th
percentile (:func:`emclassify.finding.learned.score_warning`).
"""
from __future__ import annotations

import argparse
import json
import os
from datetime import date
from pathlib import Path

import numpy as np


def noise_fields(seed: int = 0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return {"gaussian": rng.normal(100, 20, (1024, 1024)).astype(np.float32),
            "poisson-16-bit": rng.poisson(3, (1024, 1024)).astype(np.uint16),
            "smoothed-gaussian": ndimage.gaussian_filter(rng.normal(0, 1, (1024, 1024)), 4).astype(np.float32)}


def classical_check(folder: Path):
    """Per outlined micrograph and noise field: kept, faint, flagged (and F1 for the micrographs)."""
    import re

    from emclassify.finding import ClassicalFinder
    from emclassify.finding.evaluate import outlined_micrographs
    from emclassify.finding.matching import match_instances, summarise
    from emclassify.finding.training import load_outlined

    finder = ClassicalFinder()

    def run(image):
        det = finder.find(image)
        faint = sum(int(m.group(1)) for n in det.notes for m in [re.match(r"(\d+) faint object", n)] if m)
        return det, {"kept": len(det.particles), "faint": faint, "flagged": bool(det.warnings)}

    micrographs = {}
    data, _ = load_outlined(outlined_micrographs(folder), folder)
    for d in data:
        det, entry = run(d.raw)
        entry["outlined"] = int(d.labels.max())
        entry["f1"] = round(summarise([match_instances(det.labels, d.labels)])["f1"], 3)
        micrographs[d.name] = entry
    noise = {f"{name} seed {seed}": run(field)[1] for seed in range(3) for name, field in noise_fields(seed).items()}
    flagged = sorted(n for n, e in micrographs.items() if e["flagged"])
    print(f"classical: flagged {len(flagged)} of {len(micrographs)} micrographs "
          + ", ".join(f"{n} (kept {micrographs[n]['kept']} of {micrographs[n]['outlined']}, F1 {micrographs[n]['f1']})"
                      for n in flagged)
          + f"; noise fields flagged {sum(e['flagged'] for e in noise.values())} of {len(noise)}: "
          + ", ".join(f"{n} {e['kept']} kept / {e['faint']} faint" for n, e in noise.items()), flush=True)
    return {"micrographs": micrographs, "noise": noise}


def main() -> int:
    from emclassify.bench import machine_description
    from emclassify.finding.evaluate import outlined_micrographs
    from emclassify.finding.learned import MIN_PARTICLES_COMPARED, LearnedFinder
    from emclassify.finding.finderfile import load_finder
    from emclassify.finding.training import detection_score_reference
    from emclassify.io import read_image

    ap = argparse.ArgumentParser()
    ap.add_argument("micrographs")
    ap.add_argument("workdir")
    ap.add_argument("--json")
    args = ap.parse_args()
    folder = Path(args.micrographs)
    images = [image for image, _ in outlined_micrographs(folder)]
    classical = classical_check(folder)
    noise = noise_fields()
    folds = []
    for path in sorted(Path(args.workdir).glob("finder-*.safetensors")):
        loaded = load_finder(path)
        finder = LearnedFinder("", preloaded=loaded)
        trained_on = {os.path.basename(n) for n in loaded.card.data.get("names", [])}
        own, held_out = [], {}
        for image in images:
            array = read_image(image).array
            scores = [p.score for p in finder.find(array if array.ndim == 2 else array[..., 0]).particles]
            if image.name in trained_on:
                own.extend(scores)
            else:
                held_out[image.name] = {"particles": len(scores), "median": round(float(np.median(scores)), 4)
                                        if scores else None}
        reference = detection_score_reference(own)
        fields = {}
        for name, field in noise.items():
            scores = [p.score for p in finder.find(field).particles]
            fields[name] = {"particles": len(scores),
                            "median": round(float(np.median(scores)), 4) if scores else None}

        def flagged(entry):
            return (entry["particles"] >= MIN_PARTICLES_COMPARED and entry["median"] is not None
                    and entry["median"] < reference["q05"])

        fold = {"finder": path.name, "reference": reference, "held_out": held_out, "noise": fields,
                "held_out_flagged": sorted(n for n, e in held_out.items() if flagged(e)),
                "noise_flagged": sorted(n for n, e in fields.items() if flagged(e))}
        folds.append(fold)
        medians = [e["median"] for e in held_out.values() if e["median"] is not None]
        print(f"{path.name}: own particles {reference['particles']}, 5th percentile {reference['q05']:.3f}, median "
              f"{reference['median']:.3f}; held-out medians {min(medians):.3f}-{max(medians):.3f} "
              f"(flagged: {fold['held_out_flagged'] or 'none'}); noise: "
              + ", ".join(f"{n} {e['particles']} particles, median "
                          + (f"{e['median']:.3f}" if e["median"] is not None else "n/a")
                          + (" FLAGGED" if flagged(e) else "") for n, e in fields.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": date.today().isoformat(), "machine": machine_description(),
                                               "micrographs": str(folder), "classical": classical,
                                               "folds": folds}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
