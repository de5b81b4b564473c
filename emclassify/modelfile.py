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
import math
import os
import platform
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ._version import __version__
from .atomic import atomic_path
from .models import NetSVMEnsemble, SVMModel, create_model, ensemble_member, parse_arch
from .models.ensemble import split_state_dict
from .preprocess import PreprocessConfig

CARD_KEY = "emclassify_card"
# The largest LipNet (lipnet5 at 128 px) is ~120 MB of float32; anything far bigger is not ours.
MAX_MODEL_BYTES = 1024 * 2**20
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
        """Validate and build a card: every field's type and range is checked (see :func:`validate_card`)."""
        try:
            return cls(**validate_card(d))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: invalid model card: {exc}") from None


MAX_CLASSES = 1000
MAX_CLASS_NAME = 200


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _dict_field(d: Dict[str, Any], key: str) -> Dict[str, Any]:
    v = d.get(key, {})
    _check(isinstance(v, dict), f"{key!r} must be an object, got {type(v).__name__}")
    return dict(v)


def _check_confusion(cm, k: int, where: str) -> None:
    _check(isinstance(cm, list) and len(cm) == k and all(isinstance(r, list) and len(r) == k for r in cm),
           f"{where}.confusion_matrix must be a {k}x{k} list of rows (one per class)")
    _check(all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for r in cm for x in r),
           f"{where}.confusion_matrix must hold non-negative whole counts")


def validate_card(d: Any) -> Dict[str, Any]:
    """The keyword arguments of :class:`ModelCard` from a card's JSON object, after checking it.

    Checks: format name and version; classes (2..1000 distinct non-empty strings); arch a
    string; preprocess a valid :class:`PreprocessConfig` (mode, size <= MAX_INPUT_SIZE, finite
    mean/std); the dict-valued fields are objects; every stored confusion matrix (metrics
    validation / cv) is K x K non-negative integers. Raises ValueError / TypeError naming the field.
    """
    _check(isinstance(d, dict), f"the card must be a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT_NAME:
        raise ValueError(f"not an emclassify model card (format={str(d.get('format'))[:40]!r})")
    version = d.get("format_version", 0)
    _check(isinstance(version, int) and not isinstance(version, bool) and version >= 0,
           f"format_version must be a whole number, got {str(version)[:40]!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"model format version {version} is newer than this emclassify ({__version__}) "
                         "understands; upgrade emclassify")
    classes = d.get("classes")
    _check(isinstance(classes, list) and all(isinstance(c, str) and 0 < len(c) <= MAX_CLASS_NAME for c in classes),
           f"classes must be a list of class names (strings), got {str(classes)[:60]}")
    _check(2 <= len(classes) <= MAX_CLASSES and len(set(classes)) == len(classes),
           f"classes must be 2..{MAX_CLASSES} distinct names, got {str(classes)[:60]}")
    _check(isinstance(d.get("arch"), str), "arch must be a string")
    pre = d.get("preprocess")
    _check(isinstance(pre, dict), "preprocess must be an object")
    for key in ("name", "problem", "description", "created"):
        _check(isinstance(d.get(key, ""), str), f"{key!r} must be a string")
    metrics = _dict_field(d, "metrics")
    for key in ("validation", "cv"):
        m = metrics.get(key)
        if m is None:
            continue
        _check(isinstance(m, dict), f"metrics.{key} must be an object")
        if "confusion_matrix" in m:
            _check_confusion(m["confusion_matrix"], len(classes), f"metrics.{key}")
    calibration = metrics.get("calibration")
    if calibration is not None:
        t = calibration.get("temperature") if isinstance(calibration, dict) else None
        _check(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and 0.01 <= t <= 100,
               "metrics.calibration.temperature must be a number in 0.01..100")
    software = _dict_field(d, "software")
    return dict(
        classes=list(classes),
        arch=d["arch"],
        preprocess=PreprocessConfig.from_dict(pre),
        name=d.get("name", ""),
        problem=d.get("problem", ""),
        description=d.get("description", ""),
        training=_dict_field(d, "training"),
        metrics=metrics,
        data=_dict_field(d, "data"),
        features=_dict_field(d, "features"),
        software={str(k): str(v) for k, v in software.items()},
        created=d.get("created", ""),
    )


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
    return write_safetensors(path, model, card.to_dict())


def write_safetensors(path, module: torch.nn.Module, card: Dict[str, Any]) -> Path:
    """A module's weights and a card (JSON object) as one safetensors file, atomically: the
    container of classifier and particle-finder files alike."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={CARD_KEY: json.dumps(card, sort_keys=True)})
    return path


def non_finite_weights(tensors: Dict[str, torch.Tensor]) -> List[str]:
    """Names of floating-point tensors holding NaN or infinite values (a broken model), sorted."""
    return sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))


def shape_mismatch(build, tensors: Dict[str, torch.Tensor], expected_by: str = "the network") -> Optional[str]:
    """None when ``tensors`` fit the module ``build()`` makes, else the first differing key with
    both shapes. The module is built on the meta device: no memory, whatever the file claims."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected == got:
        return None
    k = (sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]])[0]
    return f"{k} is {got.get(k, 'missing')} in the file, {expected.get(k, 'not expected')} for {expected_by}"


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
    card_dict, tensors = read_safetensors(path, with_tensors)
    if isinstance(card_dict, dict) and card_dict.get("format") == FINDER_FORMAT_NAME:
        raise ModelFileError(f"{path}: a particle-finder model (made by `emclassify train-finder`), not a "
                             "classifier; give it with --finder-model")
    return ModelCard.from_dict(card_dict, source=str(path)), tensors


# The card format of particle-finder files (emclassify.finding.finderfile); named here so that
# either loader can tell the user which kind of file they gave.
FINDER_FORMAT_NAME = "emclassify-finder"


def read_safetensors(path, with_tensors: bool = True):
    """(card JSON object, tensors) of an emclassify safetensors file, after the checks every model
    file gets: a regular file, under MAX_MODEL_BYTES, a safetensors header (not a pickle), readable,
    with a card that parses as JSON. The card's content is the caller's to validate.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{path}: not a regular file (a folder, device or pipe)")
    if st.st_size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path}: {st.st_size / 2**20:.0f} MiB, larger than any emclassify model "
                             f"({MAX_MODEL_BYTES // 2**20} MiB)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    size = st.st_size
    # safetensors: 8-byte little-endian header length, then a JSON header starting with '{'.
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) >= 9 and head[8:9] == b"{" and size - 8 < header_len <= 100 * 2**20:
        raise ModelFileError(f"{path}: truncated model file (its header announces {header_len} bytes, the file "
                             f"holds {size} in all)")
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
    except RecursionError:
        raise ModelFileError(f"{path}: model card is nested too deeply to be a model card") from None
    return card_dict, tensors


def _svm_from(tensors, card) -> SVMModel:
    model = SVMModel.from_state_dict(tensors)
    if model.num_classes != len(card.classes):
        raise ValueError(f"SVM has {model.num_classes} classes, card lists {len(card.classes)}")
    return model


def _network_from(tensors, card, arch: str) -> torch.nn.Module:
    """Build ``arch`` for the card's classes and input size and load ``tensors`` into it.

    Shapes are compared first, on the meta device (no memory): a card whose input size or class
    count implies other weights than the file holds is refused before anything is allocated.
    """
    n_features = int(tensors["feature_mean"].numel()) if "feature_mean" in tensors else 0
    build = lambda: create_model(arch, num_classes=len(card.classes),  # noqa: E731
                                 input_size=card.preprocess.size, n_features=n_features)
    mismatch = shape_mismatch(build, tensors, "the architecture")
    if mismatch:
        raise ValueError(f"weights do not match architecture {arch!r} at input size "
                         f"{card.preprocess.size} px: {mismatch}")
    model = build()
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights do not match architecture {arch!r}: {' '.join(str(exc).splitlines()[:3])}") from None
    return model


def load_model(path) -> TrainedModel:
    """Load a model file: build the architecture named in its card and load the weights.

    Raises :class:`ModelFileError` for a missing, foreign, corrupt or inconsistent file.
    """
    from .features import FEATURES_VERSION

    path = Path(path)
    card, tensors = _open(path)
    bad = non_finite_weights(tensors)
    if bad:
        raise ModelFileError(f"{path}: weights contain NaN or infinite values ({', '.join(bad[:5])}); "
                             "the model is broken and would give meaningless probabilities")
    try:
        base, fused = parse_arch(card.arch)
        if fused and int(card.features.get("version", -1)) != FEATURES_VERSION:
            raise ValueError(
                f"model uses handcrafted features version {card.features.get('version')}, "
                f"this emclassify computes version {FEATURES_VERSION}; retrain the model"
            )
        member = ensemble_member(card.arch)
        if base is None:
            model = _svm_from(tensors, card)
        elif member is not None:
            net_tensors, svm_tensors, temperature = split_state_dict(tensors)
            net = _network_from(net_tensors, card, member)
            model = NetSVMEnsemble(net, _svm_from(svm_tensors, card), temperature)
        else:
            model = _network_from(tensors, card, card.arch)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None
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
    flags = card.metrics.get("flags") or []
    if flags:
        lines.append("WARNINGS:")
        lines += [f"  ! {f.get('message', f)} [{f.get('code', '')}]" if isinstance(f, dict) else f"  ! {f}"
                  for f in flags]
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
        if k == "flags":
            continue  # shown as WARNINGS at the top
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
