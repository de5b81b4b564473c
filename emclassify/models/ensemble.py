"""A network and the SVM on handcrafted features, averaged (``<network>+svm``).

Why: the CNN(+features) and the SVM err on different particles (NanoShapes,
BENCHMARKS.md: of the particles exactly one of them gets right, the fusion has 230
and the SVM 136), so the mean of their probabilities beats both: 5-fold
group-aware CV 92.7 % vs 91.2 % for the fusion alone and 89.1 % for the SVM.

forward(x: float32 ``N x 1 x S x S``, features: float ``N x F``) -> log of
``(softmax(net(x, f) / T_net) + softmax(svm(f))) / 2``, float32 ``N x C``.
T_net (a buffer) is the network's own calibration temperature, fitted on the
validation split before averaging, so neither member's confidence scale dominates.
"""
from __future__ import annotations

import torch
from torch import nn

from .svm import SVMModel

ENSEMBLE_SUFFIX = "+svm"


class NetSVMEnsemble(nn.Module):
    input_kind = "image+features"

    def __init__(self, net: nn.Module, svm: SVMModel, net_temperature: float = 1.0):
        super().__init__()
        self.net, self.svm = net, svm
        self.num_classes = net.num_classes
        self.register_buffer("net_temperature", torch.tensor([float(net_temperature)]))

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        from . import forward  # the package's dispatch on model kinds (imported late: it imports this module)

        return self.combine(forward(self.net, x, features), self.svm_probabilities(features))

    def combine_views(self, net_views: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The ensemble's output for each view, float32 ``V x N x C``, from its network's logits of
        each view ``V x N x C`` (the SVM runs once: the features do not change with the view)."""
        p_svm = self.svm_probabilities(features)
        return torch.stack([self.combine(v, p_svm) for v in net_views])

    def svm_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """The SVM member's probabilities, float64 ``N x C``."""
        return torch.softmax(self.svm(features).double(), dim=1)

    def combine(self, net_logits: torch.Tensor, p_svm: torch.Tensor) -> torch.Tensor:
        """The ensemble's output (module doc) from its network's logits ``N x C`` and
        :meth:`svm_probabilities` of the same particles: float32 ``N x C``."""
        p_net = torch.softmax(net_logits.double() / self.net_temperature.double(), dim=1)
        return torch.log((0.5 * (p_net + p_svm)).clamp_min(1e-300)).float()


def split_state_dict(tensors):
    """``(net tensors, svm tensors, net temperature)`` of an ensemble's state dict (prefixes removed)."""
    net = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
    svm = {k[len("svm."):]: v for k, v in tensors.items() if k.startswith("svm.")}
    other = sorted(k for k in tensors if not k.startswith(("net.", "svm.")) and k != "net_temperature")
    if other:
        raise ValueError(f"ensemble weights hold unexpected tensors: {', '.join(other[:5])}")
    if "net_temperature" not in tensors:
        raise ValueError("ensemble weights lack net_temperature")
    temperature = float(tensors["net_temperature"].reshape(-1)[0])
    if not temperature > 0:
        raise ValueError(f"ensemble net_temperature must be positive, got {temperature}")
    return net, svm, temperature


__all__ = ["ENSEMBLE_SUFFIX", "NetSVMEnsemble", "split_state_dict"]
