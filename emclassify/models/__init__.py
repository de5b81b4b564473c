"""Model registry: LipNet variants by name.

>>> from emclassify.models import create_model
>>> net = create_model("lipnet4", num_classes=3, input_size=64)
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional

import torch
from torch import nn

from .ensemble import ENSEMBLE_SUFFIX, NetSVMEnsemble
from .fusion import FusionNet
from .lipnet import LipNet, LipNetSpec, count_macs, min_input_size, trunk_output_side
from .svm import SVMModel, fit_svm

SVM = "svm"
FEATURE_SUFFIX = "+features"
# "auto": fit the CNN+features fusion and the SVM on the same training part, average them
# (emclassify.models.ensemble), and keep the ensemble, the fusion alone or the SVM alone, whichever
# has the higher macro-F1 on the validation split (recorded in the card). The SVM alone wins on small
# data, the fusion alone where the SVM is weak, the ensemble on larger sets (BENCHMARKS.md).
# Where the SVM shows the handcrafted features carry little (defaults.AUTO_FEATURES_INFORMATIVE), the
# same choice is made with the CNN on the image alone in place of the fusion.
AUTO = "auto"
AUTO_CANDIDATES = ("lipnet-fcn+features+svm", "lipnet-fcn+features", SVM)
AUTO_CANDIDATES_IMAGE_ONLY = ("lipnet-fcn+svm", "lipnet-fcn", SVM)

S, V = "same", "valid"

_REGISTRY: Dict[str, LipNetSpec] = {
    spec.name: spec
    for spec in (
        LipNetSpec(
            "lipnet1",
            stages=(((32, S),),),
            dense=128,
            description="conv32 · pool · dense 128",
        ),
        LipNetSpec(
            "lipnet2",
            stages=(((32, S),), ((64, S),)),
            dense=256,
            description="conv32 · pool · conv64 · pool · dense 256",
        ),
        LipNetSpec(
            "lipnet3",
            stages=(((32, S), (32, V)), ((64, S),)),
            dense=512,
            description="conv32 · conv32 · pool · conv64 · pool · dense 512",
        ),
        LipNetSpec(
            "lipnet4",
            stages=(((32, S), (32, V)), ((64, S), (64, V))),
            dense=512,
            description="conv32 · conv32 · pool · conv64 · conv64 · pool · dense 512 (LipNet-4 of the published liposome study)",
        ),
        LipNetSpec(
            "lipnet5",
            stages=(((32, S), (32, V)), ((64, S), (64, V)), ((128, S), (128, V))),
            dense=512,
            description="lipnet4 + conv128 · conv128 · pool · dense 512",
        ),
        LipNetSpec(
            "lipnet-fcn",
            stages=(((32, S), (32, S)), ((64, S), (64, S)), ((128, S), (128, S))),
            dense=None,
            conv_dropout=0.1,
            head_dropout=0.3,
            pool_last=False,
            description="conv32 · conv32 · pool · conv64 · conv64 · pool · conv128 · conv128 · global avg pool (any input size)",
        ),
    )
}


def list_models() -> List[str]:
    """Names of every registered CNN architecture, smallest first."""
    return list(_REGISTRY)


def list_archs() -> List[str]:
    """Every name ``train``/``cv`` accept: the CNNs, ``svm``, and ``<cnn>+features`` fusions."""
    return ([AUTO] + list(_REGISTRY) + [SVM] + [f"{n}{FEATURE_SUFFIX}" for n in _REGISTRY]
            + [AUTO_CANDIDATES[0]])


def ensemble_member(name: str) -> Optional[str]:
    """The network architecture of an ensemble name ``<network>+svm``, else None."""
    if name.endswith(ENSEMBLE_SUFFIX) and name != SVM:
        member = name[: -len(ENSEMBLE_SUFFIX)]
        parse_arch(member)
        if member in (SVM, AUTO) or ensemble_member(member):
            raise ValueError(f"{name!r}: an ensemble averages one network with the SVM")
        return member
    return None


def parse_arch(name: str):
    """``(cnn_name or None, uses_handcrafted_features)`` for an architecture name."""
    if name == SVM:
        return None, True
    if name == AUTO:
        return parse_arch(AUTO_CANDIDATES[0])
    member = ensemble_member(name)
    if member is not None:
        return parse_arch(member)[0], True
    base, fused = (name[: -len(FEATURE_SUFFIX)], True) if name.endswith(FEATURE_SUFFIX) else (name, False)
    get_spec(base)
    return base, fused


def get_spec(name: str) -> LipNetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(list_archs())}") from None


def input_kind(model) -> str:
    """What a model's forward takes: ``image`` (x), ``features`` (f) or ``image+features`` (x, f)."""
    return getattr(model, "input_kind", "image")


def d4_views(x: torch.Tensor) -> List[torch.Tensor]:
    """The 8 rotations/reflections of ``N x C x S x S`` images (the dihedral group of the square)."""
    views = []
    for flip in (False, True):
        base = x.flip(3) if flip else x
        views += [torch.rot90(base, k, dims=(2, 3)) for k in range(4)]
    return views


def view_logits(model: nn.Module, x: Optional[torch.Tensor], features=None) -> torch.Tensor:
    """Logits of one batch in each of the 8 D4 views, float32 ``V x N x C`` (the identity view first,
    so ``[0]`` is the plain forward). Feature-only models have one view (``1 x N x C``).

    An ensemble runs its network once per view and its SVM once: the SVM's input, the handcrafted
    features, does not change when the image turns.
    """
    if input_kind(model) == "features":
        return forward(model, x, features)[None]
    if isinstance(model, NetSVMEnsemble):
        return model.combine_views(view_logits(model.net, x, features), features)
    return torch.stack([forward(model, v, features) for v in d4_views(x)])


def model_logits(model: nn.Module, x: Optional[torch.Tensor], features=None, tta: bool = False) -> torch.Tensor:
    """One batch through any model kind: ``image`` (x), ``image+features`` (x, f) or ``features`` (f).

    tta: average the logits over the 8 D4 views of the image (test-time augmentation; a particle
    seen in a TEM has no preferred orientation, :func:`view_logits`). Ignored by feature-only models.
    """
    if input_kind(model) == "features" or not tta:
        return forward(model, x, features)
    return view_logits(model, x, features).mean(0)


def forward(model: nn.Module, x: Optional[torch.Tensor], features=None) -> torch.Tensor:
    """The one place that knows what each model kind takes: ``image`` -> model(x), ``features`` ->
    model(f), ``image+features`` -> model(x, f). x: float32 ``N x 1 x S x S``; features: ``N x F``."""
    kind = input_kind(model)
    if kind == "features":
        return model(features)
    return model(x) if kind == "image" else model(x, features)


def create_model(name: str, num_classes: int, input_size: int = 64, in_channels: int = 1,
                 n_features: int = 0, dropout: Optional[float] = None):
    """Build an untrained network. Shapes: input ``N x in_channels x S x S`` -> logits ``N x num_classes``.

    ``<cnn>+features`` needs ``n_features``. ``dropout`` overrides the head dropout (conv
    dropout becomes half of it); it changes no weights. SVMs are not built empty: see
    :func:`fit_svm`.
    """
    if ensemble_member(name) is not None:
        raise ValueError("an ensemble is made by fitting its members (emclassify.training.fit_model), not built empty")
    base, fused = parse_arch(name)
    if base is None:
        raise ValueError("an SVM is made by fitting (emclassify.models.fit_svm), not built empty")
    spec = get_spec(base)
    if dropout is not None:
        spec = replace(spec, conv_dropout=dropout / 2, head_dropout=dropout)
    need = min_input_size(spec)
    if input_size < need:
        raise ValueError(f"{base} needs an input of at least {need}x{need} px, got {input_size}")
    cnn = LipNet(spec, num_classes=num_classes, input_size=input_size, in_channels=in_channels)
    if fused:
        if n_features < 1:
            raise ValueError(f"{name} needs the number of handcrafted features")
        return FusionNet(cnn, n_features)
    return cnn


def architecture_table(input_size: int = 64, num_classes: int = 3) -> str:
    """Markdown table of every architecture: layers, parameters and MFLOP at ``input_size``."""
    lines = [
        f"| name | layers | parameters ({num_classes} classes, {input_size}×{input_size}) | MFLOP at {input_size}×{input_size} | min input |",
        "|---|---|---:|---:|---:|",
    ]
    for name, spec in _REGISTRY.items():
        model = create_model(name, num_classes, input_size)
        params = sum(p.numel() for p in model.parameters())
        mflop = 2 * count_macs(model, input_size) / 1e6
        lines.append(f"| `{name}` | {spec.description} | {params:,} | {mflop:,.1f} | {min_input_size(spec)} |")
    return "\n".join(lines)


__all__ = [
    "AUTO",
    "AUTO_CANDIDATES",
    "AUTO_CANDIDATES_IMAGE_ONLY",
    "FEATURE_SUFFIX",
    "ENSEMBLE_SUFFIX",
    "FusionNet",
    "NetSVMEnsemble",
    "ensemble_member",
    "SVM",
    "SVMModel",
    "fit_svm",
    "input_kind",
    "model_logits",
    "view_logits",
    "forward",
    "d4_views",
    "list_archs",
    "parse_arch",
    "LipNet",
    "LipNetSpec",
    "architecture_table",
    "count_macs",
    "create_model",
    "get_spec",
    "list_models",
    "min_input_size",
    "trunk_output_side",
]
