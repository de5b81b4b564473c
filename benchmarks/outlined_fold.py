"""One fold of ``find-eval --folds 5`` for the single-fold diagnostics in this folder.

    from outlined_fold import load_fold   # a script run as ``python benchmarks/<script>.py``
"""
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from emclassify.finding.evaluate import micrograph_folds, outlined_micrographs, truth_classes
from emclassify.finding.training import OutlinedMicrograph, load_outlined
from emclassify.io import Sample
from emclassify.micrographs import FoundMicrograph, crop_context, micrograph_rows


def load_fold(folder: Path, k: int, folds: int = 5, seed: int = 0
              ) -> Tuple[List[OutlinedMicrograph], List[OutlinedMicrograph], Dict]:
    """(training micrographs, held-out micrographs, outlined classes (``truth_classes``)) of fold ``k`` (0-based),
    the split ``cross_validate_finders`` makes with the same folds and seed."""
    pairs = outlined_micrographs(folder)
    data, _ = load_outlined(pairs, folder)
    held = set(micrograph_folds(len(data), folds, seed)[k])
    truths = truth_classes(folder, pairs)
    return ([d for i, d in enumerate(data) if i not in held], [d for i, d in enumerate(data) if i in held], truths)


def found_probabilities(image, detections, classifier) -> Dict[int, np.ndarray]:
    """Found particle index -> class probabilities (``classifier.classes`` order), the particles cut
    out and classified as ``batch --micrographs`` does (as ``evaluate.classify_found``)."""
    found = FoundMicrograph(Sample(path=Path("micrograph"), relpath="micrograph"), image=image, detections=detections)
    rows = micrograph_rows(found, classifier, crop_context(classifier.card), classifier.images_per_batch(64), None)
    return {r.particle.index: np.asarray(r.probabilities) for r in rows if r.particle is not None and r.probabilities}


def write_result(script: str, fields: Dict, json_path: Optional[str]) -> Dict:
    """Print (and with ``json_path`` write) a result with its date, machine and command line."""
    from emclassify.bench import machine_description

    out = {"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
           "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]), **fields}
    print(json.dumps(out, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1) + "\n")
    return out
