"""Model files: weights plus a model card, in one safetensors file.

A model file is a `safetensors <https://github.com/huggingface/safetensors>`_
file: a JSON header and raw little-endian tensor bytes. Reading it parses JSON
and copies numbers; it cannot execute code (unlike a pickle, which emclassify
never loads). The card is stored as JSON in the header's ``__metadata__`` under
``emclassify_card``; ``emclassify info MODEL`` prints it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ._version import __version__
from .atomic import atomic_path
from .models import SVMModel, create_model, parse_arch
from .preprocess import PreprocessConfig

CARD_KEY = "emclassify_card"
FORMAT_NAME = "emclassify-model"
FORMAT_VERSION = 1


class ModelFileError(Exception):
    """A model file that cannot be used; the message names the file and the problem."""


def software_versions() -> Dict[str, str]:
    """Versions recorded in every card and report."""
    return {
        "emclassify": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class ModelCard:
    """What a trained model is, how it was made and how good it is.

    classes: class names, in the order of the model's outputs.
    arch: registry name (:func:`emclassify.models.list_models`).
    preprocess: how raw images become inputs (mode, size, normalisation).
    training: settings used (epochs, balance, augmentation, ...).
    metrics: validation / CV results, e.g. ``{"validation": {"macro_f1": .., "confusion_matrix": [[..]]}}``.
    data: fingerprint, counts and source of the training data.
    """

    classes: List[str]
    arch: str
    preprocess: PreprocessConfig
    name: str = ""
    problem: str = ""
    description: str = ""
    training: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    data: Dict[str, Any] = field(default_factory=dict)
    features: Dict[str, Any] = field(default_factory=dict)  # {"version", "n"} when handcrafted features are used
    software: Dict[str, str] = field(default_factory=software_versions)
    created: str = field(default_factory=utc_now)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "problem": self.problem,
            "description": self.description,
            "classes": list(self.classes),
            "arch": self.arch,
            "preprocess": self.preprocess.to_dict(),
            "training": self.training,
            "metrics": self.metrics,
            "data": self.data,
            "features": self.features,
            "software": self.software,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = "card") -> "ModelCard":
        if d.get("format") != FORMAT_NAME:
            raise ModelFileError(f"{source}: not an emclassify model card (format={d.get('format')!r})")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFileError(
                f"{source}: model format version {d.get('format_version')} is newer than this "
                f"emclassify ({__version__}) understands; upgrade emclassify"
            )
        try:
            classes = [str(c) for c in d["classes"]]
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise ValueError(f"classes must be >= 2 distinct names, got {classes}")
            return cls(
                classes=classes,
                arch=str(d["arch"]),
                preprocess=PreprocessConfig.from_dict(d["preprocess"]),
                name=str(d.get("name", "")),
                problem=str(d.get("problem", "")),
                description=str(d.get("description", "")),
                training=dict(d.get("training", {})),
                metrics=dict(d.get("metrics", {})),
                data=dict(d.get("data", {})),
                features=dict(d.get("features", {})),
                software=dict(d.get("software", {})),
                created=str(d.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: invalid model card: {exc}") from None


@dataclass
class TrainedModel:
    """A loaded model: the network (eval mode, CPU), its card, and the file's identity."""

    model: torch.nn.Module
    card: ModelCard
    path: Optional[Path] = None
    sha256: str = ""


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def save_model(path, model: torch.nn.Module, card: ModelCard) -> Path:
    """Write weights + card to ``path`` atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {CARD_KEY: json.dumps(card.to_dict(), sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _describe_foreign(head: bytes) -> str:
    if head[:2] == b"PK":
        return ("a zip archive (a PyTorch/pickle checkpoint?); emclassify never loads pickles "
                "because loading them can run arbitrary code")
    if head[:1] == b"\x80":
        return "a Python pickle; emclassify never loads pickles because loading them can run arbitrary code"
    if not head:
        return "an empty file"
    return "not a safetensors file"


def read_card(path) -> ModelCard:
    """Read only the card of a model file (the weights are not read)."""
    return _open(path, with_tensors=False)[0]


def _open(path, with_tensors: bool = True):
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    with open(path, "rb") as fh:
        head = fh.read(16)
    size = path.stat().st_size
    # safetensors: 8-byte little-endian header length, then a JSON header starting with '{'.
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) < 9 or not (0 < header_len <= min(size - 8, 100 * 2**20)) or head[8:9] != b"{":
        raise ModelFileError(f"{path}: not an emclassify model file ({_describe_foreign(head)})")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys} if with_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated model file: {exc}") from None
    if CARD_KEY not in meta:
        raise ModelFileError(f"{path}: a safetensors file, but without an emclassify model card")
    try:
        card_dict = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: model card is not valid JSON: {exc}") from None
    return ModelCard.from_dict(card_dict, source=str(path)), tensors


def load_model(path) -> TrainedModel:
    """Load a model file: build the architecture named in its card and load the weights.

    Raises :class:`ModelFileError` for a missing, foreign, corrupt or inconsistent file.
    """
    from .features import FEATURES_VERSION

    path = Path(path)
    card, tensors = _open(path)
    try:
        base, fused = parse_arch(card.arch)
        if fused and int(card.features.get("version", -1)) != FEATURES_VERSION:
            raise ValueError(
                f"model uses handcrafted features version {card.features.get('version')}, "
                f"this emclassify computes version {FEATURES_VERSION}; retrain the model"
            )
        if base is None:
            model = SVMModel.from_state_dict(tensors)
            if model.num_classes != len(card.classes):
                raise ValueError(f"SVM has {model.num_classes} classes, card lists {len(card.classes)}")
        else:
            n_features = int(tensors["feature_mean"].numel()) if "feature_mean" in tensors else 0
            model = create_model(card.arch, num_classes=len(card.classes), input_size=card.preprocess.size,
                                 n_features=n_features)
    except (ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    try:
        if base is not None:
            model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelFileError(
            f"{path}: weights do not match architecture {card.arch!r}: {' '.join(first)}"
        ) from None
    model.eval()
    return TrainedModel(model=model, card=card, path=path, sha256=file_sha256(path))


def format_card(card: ModelCard, path=None, sha256: str = "") -> str:
    """Human-readable card for ``emclassify info``."""
    p = card.preprocess
    lines = []
    if path:
        lines.append(f"file:          {path}")
    if sha256:
        lines.append(f"sha256:        {sha256}")
    lines += [
        f"name:          {card.name or '-'}",
        f"problem:       {card.problem or '-'}",
        f"architecture:  {card.arch}",
        f"classes:       {', '.join(card.classes)}",
        f"input:         mode={p.mode} size={p.size}x{p.size} margin={p.margin}px normalise={p.normalize}"
        + (f" (mean={p.mean}, std={p.std})" if p.normalize == "fixed" else ""),
        f"created:       {card.created}",
        "software:      " + ", ".join(f"{k} {v}" for k, v in card.software.items() if k != "platform"),
    ]
    if card.description:
        lines.append(f"description:   {card.description}")
    if card.data:
        lines.append("data:")
        lines += [f"  {k}: {_fmt(v)}" for k, v in card.data.items()]
    if card.training:
        lines.append("training:")
        for k, v in card.training.items():
            if k == "history" and isinstance(v, list):
                f1 = ", ".join(f"{h.get('val_macro_f1', 0):.3f}" for h in v)
                lines.append(f"  history: {len(v)} epochs; validation macro-F1 by epoch: {f1}")
            else:
                lines.append(f"  {k}: {_fmt(v)}")
    if card.metrics:
        lines.append("metrics:")
        lines += _fmt_metrics(card.metrics, card.classes, indent="  ")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _fmt_metrics(metrics: Dict[str, Any], classes: List[str], indent: str) -> List[str]:
    out = []
    for k, v in metrics.items():
        if k == "confusion_matrix" and isinstance(v, list):
            width = max(len(c) for c in classes) + 2
            out.append(f"{indent}confusion_matrix (rows = true, columns = predicted):")
            out.append(indent + "  " + " " * width + "".join(f"{c:>{width}}" for c in classes))
            for c, row in zip(classes, v):
                out.append(indent + "  " + f"{c:>{width}}" + "".join(f"{x:>{width}}" for x in row))
        elif isinstance(v, dict) and not all(not isinstance(x, (dict, list)) for x in v.values()):
            out.append(f"{indent}{k}:")
            out += _fmt_metrics(v, classes, indent + "  ")
        else:
            out.append(f"{indent}{k}: {_fmt(v)}")
    return out
