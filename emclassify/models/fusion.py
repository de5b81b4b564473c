"""CNN + handcrafted-feature fusion (``<lipnet>+features``).

The CNN's penultimate embedding (``N x E``) is concatenated with the standardised
handcrafted features (``N x F``, :mod:`emclassify.features`) before a linear
classifier head. Feature mean/std are buffers fitted on the training data, so the
model file carries them.

forward(x: float32 ``N x 1 x S x S``, features: float ``N x F``) -> logits ``N x C``.
"""
from __future__ import annotations

import torch
from torch import nn

from .lipnet import LipNet, RecordLinear


class FusionNet(nn.Module):
    input_kind = "image+features"

    def __init__(self, cnn: LipNet, n_features: int):
        super().__init__()
        self.cnn = cnn
        self.n_features = n_features
        self.num_classes = cnn.num_classes
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.head = nn.Sequential(nn.Dropout(cnn.spec.head_dropout), RecordLinear(cnn.embedding_dim + n_features,
                                                                               cnn.num_classes))

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise with the training features' mean and std (constant features: std 1)."""
        f = features.double()
        std = f.std(dim=0, unbiased=False)
        self.feature_mean.copy_(f.mean(dim=0).float())
        self.feature_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)).float())

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        f = (features.float() - self.feature_mean) / self.feature_std
        return self.head(torch.cat([self.cnn.embed(x), f], dim=1))
