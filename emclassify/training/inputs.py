"""Decoded, preprocessed training inputs: :class:`InputSet` and :func:`load_inputs` (bad files
skipped with their reason, never a crash); :func:`refuse_too_small` for degenerate regions."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from .. import ops
from ..features import N_FEATURES, FeatureCache
from ..inference import load_for_model
from ..io import Sample
from ..preprocess import PreprocessConfig


@dataclass
class InputSet:
    """Decoded, preprocessed particles.

    x: float32 ``N x 1 x S x S``; features: float64 ``N x F`` or None; labels: int64 ``N``
    (-1 when unlabelled); samples: the source samples, aligned; errors: "relpath: reason".
    """

    x: torch.Tensor
    features: Optional[np.ndarray]
    labels: torch.Tensor
    samples: List[Sample]
    errors: List[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx) -> "InputSet":
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        return InputSet(self.x[t], None if self.features is None else self.features[idx], self.labels[t],
                        [self.samples[i] for i in idx], [])


def load_inputs(samples: Sequence[Sample], cfg: PreprocessConfig, classes: Sequence[str],
                want_features: bool = False, workers: int = 4,
                progress: Optional[Callable[[int, int], None]] = None) -> InputSet:
    """Decode + preprocess ``samples`` once (and compute features if wanted, cached per image)."""
    index = {c: i for i, c in enumerate(classes)}
    cache = FeatureCache() if want_features else None
    xs, feats, labels, kept, errors = [], [], [], [], []
    chunk = 256  # bounded peak memory for the raw images
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(samples), chunk):
            part = samples[start : start + chunk]
            loaded = list(pool.map(lambda s: load_for_model(s, s.path.parent, cfg, want_features, cache), part))
            good = [(s, item) for s, item in zip(part, loaded) if item.result.ok]
            errors += [f"{s.relpath}: {item.result.error}" for s, item in zip(part, loaded) if not item.result.ok]
            if good:
                xs.append(ops.preprocess([g.image for _, g in good], [g.mask for _, g in good], cfg))
                if want_features:
                    feats.append(np.stack([g.features for _, g in good]))
                labels += [index[s.label] if s.label is not None else -1 for s, _ in good]
                kept += [s for s, _ in good]
            if progress is not None:
                progress(min(start + chunk, len(samples)), len(samples))
    x = torch.cat(xs) if xs else torch.zeros((0, 1, cfg.size, cfg.size))
    f = np.concatenate(feats) if feats else (np.zeros((0, N_FEATURES)) if want_features else None)
    return InputSet(x, f, torch.tensor(labels, dtype=torch.int64), kept, errors)


class TooSmallError(ValueError):
    """Images whose region is under the documented minimum; the message names them."""


def refuse_too_small(data: "InputSet") -> None:
    """Raise :class:`TooSmallError` naming the images whose region is too small to classify.

    Why an error, not a skip: with a default that does not fit the data (e.g. a margin crop of
    41 px images) every image would be skipped or, before this check, shrunk to one pixel.
    """
    small = [e.split(": ", 1) for e in data.errors if "too small to classify" in e]
    if small:
        reason = small[0][1]
        names = [p for p, _ in small]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise TooSmallError(f"{len(small)} image(s) are too small to classify with these input settings "
                            f"(e.g. {reason}): {shown}")
