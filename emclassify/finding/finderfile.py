"""Particle-finder model files: U-Net weights plus a finder card, in one safetensors file.

The same container as classifier files (:mod:`emclassify.modelfile`: no pickle, size-capped,
checked before use), with its own card format ``emclassify-finder`` so that a finder given as a
classifier, or a classifier given as a finder, is refused with a message saying which it is.
``emclassify info FILE`` prints either kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..defaults import POLARITIES
from ..modelfile import (FINDER_FORMAT_NAME, FORMAT_NAME as CLASSIFIER_FORMAT_NAME, ModelFileError, file_sha256,
                         non_finite_weights, read_safetensors, shape_mismatch, software_versions, utc_now,
                         write_safetensors)
from .unet import ARCH, FinderNet

FORMAT_VERSION = 2   # 2: peak_threshold (a version-1 card reads as 0: no such filter)
MAX_WIDTH = 512


def _number(d: Dict[str, Any], key: str, lo: float, hi: float, where: str) -> float:
    v = d.get(key)
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f"{where}.{key} must be a number in {lo:g}..{hi:g}, got {str(v)[:40]!r}")
    return float(v)


@dataclass
class FinderCard:
    """What a particle finder is, what it was trained on and how well it found particles.

    widths: U-Net channels per level. median_diameter_px: the training particles' median
    equivalent-circle diameter (px), the scale the network knows; a micrograph whose particles
    are another size is resampled to it when the user gives their diameter. min_area_px: smaller
    objects are dropped. foreground_threshold / seed_threshold: where the probability maps are cut
    (the seed threshold chosen on the validation micrographs when there were any). peak_threshold:
    a found object is kept only when its centre-ness reaches this (chosen at training,
    :func:`~.training.choose_peak_threshold`; 0, or any value at or below seed_threshold, changes nothing).
    metrics: validation results beside the classical finder's on the same micrographs.
    polarity: the contrast of the particles it was trained on, ``dark`` (darker than their
    surroundings) or ``bright``; None for older finder files and for training particles of mixed
    contrast (:func:`~.training.particle_polarity`). A micrograph of the other contrast is inverted
    before the network sees it when the user says so (``LearnedFinder.polarity``).
    """

    widths: List[int]
    median_diameter_px: float
    min_area_px: float
    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    peak_threshold: float = 0.0
    polarity: Optional[str] = None
    arch: str = ARCH
    name: str = ""
    training: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    data: Dict[str, Any] = field(default_factory=dict)
    software: Dict[str, str] = field(default_factory=software_versions)
    created: str = field(default_factory=utc_now)

    @property
    def score_floor(self) -> Optional[float]:
        """The detection score that 95 % of the particles found on the finder's own micrographs
        reached (``metrics["detection_scores"]``, recorded by ``train-finder``); None for older finder
        files and for training stopped before the thresholds were chosen."""
        scores = self.metrics.get("detection_scores")
        return float(scores["q05"]) if isinstance(scores, dict) and "q05" in scores else None

    def to_dict(self) -> Dict[str, Any]:
        return {"format": FINDER_FORMAT_NAME, "format_version": FORMAT_VERSION, "arch": self.arch,
                "name": self.name, "widths": list(self.widths), "median_diameter_px": self.median_diameter_px,
                "min_area_px": self.min_area_px, "foreground_threshold": self.foreground_threshold,
                "seed_threshold": self.seed_threshold, "peak_threshold": self.peak_threshold,
                "polarity": self.polarity, "training": self.training, "metrics": self.metrics,
                "data": self.data, "software": self.software, "created": self.created}

    @classmethod
    def from_dict(cls, d: Any, source: str = "card") -> "FinderCard":
        """Validate every field (type and range) and build the card; ModelFileError names the problem."""
        try:
            if not isinstance(d, dict):
                raise ValueError(f"the card must be a JSON object, got {type(d).__name__}")
            if d.get("format") == CLASSIFIER_FORMAT_NAME:
                raise ValueError("this is a classifier model, not a particle finder; give it with --model")
            if d.get("format") != FINDER_FORMAT_NAME:
                raise ValueError(f"not an emclassify particle-finder card (format={str(d.get('format'))[:40]!r})")
            version = d.get("format_version")
            if not (isinstance(version, int) and not isinstance(version, bool) and 0 <= version):
                raise ValueError(f"format_version must be a whole number, got {str(version)[:40]!r}")
            if version > FORMAT_VERSION:
                raise ValueError(f"finder format version {version} is newer than this emclassify understands; upgrade")
            if d.get("arch") != ARCH:
                raise ValueError(f"unknown finder architecture {str(d.get('arch'))[:40]!r} (this emclassify has {ARCH!r})")
            widths = d.get("widths")
            if not (isinstance(widths, list) and 2 <= len(widths) <= 8 and all(
                    isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_WIDTH for w in widths)):
                raise ValueError(f"widths must be 2..8 whole numbers in 1..{MAX_WIDTH}, got {str(widths)[:60]}")
            for key in ("training", "metrics", "data", "software"):
                if not isinstance(d.get(key, {}), dict):
                    raise ValueError(f"{key!r} must be an object")
            scores = d.get("metrics", {}).get("detection_scores")
            if scores is not None:
                if not isinstance(scores, dict):
                    raise ValueError("metrics 'detection_scores' must be an object")
                for key in ("q05", "median"):
                    _number(scores, key, 0.0, 1.0, "metrics 'detection_scores'")
            for key in ("name", "created"):
                if not isinstance(d.get(key, ""), str):
                    raise ValueError(f"{key!r} must be a string")
            polarity = d.get("polarity")
            if polarity not in (None, *POLARITIES):
                raise ValueError(f"polarity must be one of {', '.join(POLARITIES)} or null, got {str(polarity)[:40]!r}")
            return cls(widths=list(widths),
                       median_diameter_px=_number(d, "median_diameter_px", 1.0, 1e5, "card"),
                       min_area_px=_number(d, "min_area_px", 0.0, 1e10, "card"),
                       foreground_threshold=_number(d, "foreground_threshold", 0.01, 0.99, "card"),
                       seed_threshold=_number(d, "seed_threshold", 0.01, 0.99, "card"),
                       peak_threshold=_number(d, "peak_threshold", 0.0, 0.99, "card") if "peak_threshold" in d else 0.0,
                       polarity=polarity,
                       name=d.get("name", ""), training=dict(d.get("training", {})),
                       metrics=dict(d.get("metrics", {})), data=dict(d.get("data", {})),
                       software={str(k): str(v) for k, v in d.get("software", {}).items()},
                       created=d.get("created", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: invalid particle-finder card: {exc}") from None


@dataclass
class LoadedFinder:
    """A loaded finder network (eval mode, CPU), its card and the file's identity."""

    net: FinderNet
    card: FinderCard
    path: Optional[Path] = None
    sha256: str = ""


def save_finder(path, net: FinderNet, card: FinderCard) -> Path:
    """Write weights + card to ``path`` atomically."""
    return write_safetensors(path, net, card.to_dict())


def read_finder_card(path) -> FinderCard:
    return FinderCard.from_dict(read_safetensors(path, with_tensors=False)[0], source=str(path))


def load_finder(path) -> LoadedFinder:
    """Load a finder file; ModelFileError for a missing, foreign, corrupt or inconsistent one."""
    path = Path(path)
    card_dict, tensors = read_safetensors(path)
    card = FinderCard.from_dict(card_dict, source=str(path))
    bad = non_finite_weights(tensors)
    if bad:
        raise ModelFileError(f"{path}: weights contain NaN or infinite values ({', '.join(bad[:5])})")
    mismatch = shape_mismatch(lambda: FinderNet(card.widths), tensors)
    if mismatch:
        raise ModelFileError(f"{path}: weights do not match a finder U-Net of widths {card.widths}: {mismatch}")
    net = FinderNet(card.widths)
    net.load_state_dict(tensors, strict=True)
    net.eval()
    return LoadedFinder(net, card, path, file_sha256(path))


def format_finder_card(card: FinderCard, path=None, sha256: str = "") -> str:
    """Human-readable card (``emclassify info``)."""
    lines = [f"particle finder: {path}" if path else "particle finder"]
    if sha256:
        lines.append(f"  sha256: {sha256}")
    lines += [f"  architecture: {card.arch} (widths {', '.join(map(str, card.widths))})",
              f"  trained on particles of median diameter {card.median_diameter_px:.1f} px; "
              f"objects under {card.min_area_px:.0f} px² dropped",
              f"  thresholds: foreground {card.foreground_threshold:.2f}, seed {card.seed_threshold:.2f}"
              + (f", centre peak {card.peak_threshold:.2f}" if card.peak_threshold > card.seed_threshold else ""),
              f"  created: {card.created}"]
    contrast = card.metrics.get("particle_contrast") if isinstance(card.metrics.get("particle_contrast"), dict) else {}
    share = contrast.get("darker_share")
    measured = f" ({share:.0%} of {contrast.get('particles', '?')} darker than their surroundings)" if isinstance(
        share, (int, float)) else ""
    if card.polarity:
        lines.append(f"  particles: {card.polarity} on their background{measured}; micrographs of the other contrast "
                     "need --polarity")
    else:
        lines.append(f"  particles: contrast not recorded{measured or ' (an older finder file)'}, so --polarity "
                     "cannot be used")
    t = card.training
    if t:
        lines.append("  training: " + ", ".join(f"{k} {v}" for k, v in t.items() if not isinstance(v, (dict, list))))
    d = card.data
    if d:
        lines.append(f"  data: {d.get('micrographs', '?')} micrographs, {d.get('particles', '?')} particles"
                     f" from {d.get('source', '?')}")
    peak = card.metrics.get("peak_threshold")
    if isinstance(peak, dict) and isinstance(peak.get("f1_by_threshold"), dict):
        lines.append(f"  centre peak threshold chosen on {peak.get('micrographs', '?')} {peak.get('chosen_on', '?')}, "
                     "F1 by threshold: " + ", ".join(f"{'none' if k == '0' else k} {_num(f)}"
                                                     for k, f in peak["f1_by_threshold"].items()))
    scores = card.metrics.get("detection_scores")
    if card.score_floor is not None:
        lines.append(f"  detection scores of the {scores.get('particles', '?')} particles found on "
                     f"{scores.get('micrographs', '?')} {scores.get('on', 'micrographs')}: median "
                     f"{_num(scores.get('median'))}, 5th percentile {_num(card.score_floor)} (a micrograph whose "
                     "particles score under it is flagged)")
    else:
        lines.append("  detection scores: not recorded (an older finder file, or its training stopped early), so "
                     "micrographs unlike the finder's own (noise, empty areas) cannot be flagged; train it again to "
                     "record them")
    v = card.metrics.get("validation")
    if isinstance(v, dict) and isinstance(v.get("learned"), dict):
        le = v["learned"]
        cl = v.get("classical") if isinstance(v.get("classical"), dict) else {}
        lines.append(f"  validation on {v.get('micrographs', '?')} held-out micrographs: F1 {_num(le.get('f1'))}, "
                     f"mean IoU {_num(le.get('mean_iou'))}"
                     + (f" (classical finder on the same: F1 {_num(cl.get('f1'))}, IoU {_num(cl.get('mean_iou'))})"
                        if cl else ""))
    else:
        lines.append("  validation: none (no micrographs were held out; measure it with `emclassify find-eval --folds`)")
    flags = card.metrics.get("flags", [])
    for flag in flags if isinstance(flags, list) else [flags]:
        lines.append(f"  WARNING: {flag}")
    return "\n".join(lines)


def _num(v) -> str:
    """A score as printed in a card: 3 decimals, or "n/a" (no particle matched, or not a number)."""
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"
