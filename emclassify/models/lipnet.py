"""The LipNet family: small CNNs for single-particle TEM images.

Every LipNet is a *trunk* of stages, each stage a few 3x3 conv blocks
(conv -> batch-norm -> ReLU) ending in 2x2 max-pool and dropout, and a *head*:

- dense head (``lipnet1`` ... ``lipnet5``): flatten -> linear(dense) -> ReLU ->
  dropout -> linear(classes). The flatten size depends on the input size, so the
  model is built for one input size.
- global head (``lipnet-fcn``): global average pool -> dropout -> linear(classes);
  accepts any input size >= its receptive minimum.

``lipnet4`` is the seed's network (the classic Keras CIFAR-10 layout):
conv32(same) conv32(valid) pool drop0.25 · conv64(same) conv64(valid) pool
drop0.25 · dense 512 drop0.5, with batch-norm after each conv.

Input: float32 ``N x 1 x S x S`` (see :mod:`emclassify.preprocess`);
output: logits ``N x num_classes``.

Inference (eval mode, autograd off) on the CPU runs the trunk through the fused native op
``emclassify::conv_trunk`` (each block conv + folded batch-norm + ReLU +
max-pool in one pass, image by image) when the native library is loaded; on a GPU, training, and any
call that needs gradients (saliency), the PyTorch layers below run (cuDNN on a GPU: faster there than
the fused CUDA kernel, :func:`emclassify.ops.native_preferred`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops

# A conv layer spec: (out_channels, padding) with padding "same" (1) or "valid" (0).
ConvSpec = Tuple[int, str]


@dataclass(frozen=True)
class LipNetSpec:
    """Architecture of one LipNet variant.

    stages: per stage, its conv layers; each stage ends with 2x2 max-pool
        (unless ``pool_last`` is False for the last stage).
    dense: width of the hidden dense layer, or None for the global-pool head.
    conv_dropout / head_dropout: dropout after each pooled stage / before the classifier.
    """

    name: str
    stages: Tuple[Tuple[ConvSpec, ...], ...]
    dense: Optional[int]
    conv_dropout: float = 0.25
    head_dropout: float = 0.5
    pool_last: bool = True
    description: str = ""


class ConvBlock(nn.Module):
    """conv 3x3 (no bias) -> batch-norm -> ReLU. The unit the native op fuses."""

    def __init__(self, c_in: int, c_out: int, padding: str):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1 if padding == "same" else 0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        bn = self.bn
        if bn.training and bn.track_running_stats and ops.training_ops_preferred(x):
            return self._train_native(x)
        return self.act(bn(x))

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``max_pool2d(self(x), 2)``; in training on the native path, one fused op that never
        stores the full-resolution activation (:func:`emclassify.ops.bn_relu_pool_train`)."""
        x = self.conv(x)
        bn = self.bn
        if bn.training and bn.track_running_stats and ops.training_ops_preferred(x):
            return self._train_native(x, ops.bn_relu_pool_train)
        return F.max_pool2d(self.act(bn(x)), 2)

    def _train_native(self, x: torch.Tensor, op=ops.bn_relu_train) -> torch.Tensor:
        """Training-mode batch-norm + ReLU (``op``: then max-pool too) through a fused native op, with
        the running statistics updated exactly as ``nn.BatchNorm2d`` updates them (momentum, or a
        cumulative average when momentum is None; the unbiased variance)."""
        bn = self.bn
        y, mean, var = op(x, bn.weight, bn.bias, bn.eps, native=True)
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            n = x.numel() // x.shape[1]
            bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            bn.running_var.mul_(1 - factor).add_(var * (n / (n - 1)), alpha=factor)
        return y

    @property
    def padding(self) -> int:
        """1 for "same", 0 for "valid"."""
        return int(self.conv.padding[0])

    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Weight ``Cout x Cin x 3 x 3`` and bias ``Cout`` of the conv with eval-mode batch-norm folded in.

        conv(x, w) * s + (beta - mean * s) with s = gamma / sqrt(var + eps)
        equals conv(x, w * s) + (beta - mean * s).
        """
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = self.conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        return weight.detach(), bias.detach()


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose training-mode mask comes from :func:`emclassify.ops.dropout` (the native
    op on CPU channels-last activations: ATen's Bernoulli draw was ~7 % of a training step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return ops.dropout(x, self.p)


class Stage(nn.Module):
    """Conv blocks, then optional 2x2 max-pool and dropout."""

    def __init__(self, c_in: int, convs: Sequence[ConvSpec], pool: bool, dropout: float):
        super().__init__()
        blocks: List[nn.Module] = []
        for c_out, padding in convs:
            blocks.append(ConvBlock(c_in, c_out, padding))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.pool, nn.MaxPool2d) and self.training:
            # the last block pools in its own forward: fused on the native training path
            for block in self.blocks[:-1]:
                x = block(x)
            return self.dropout(self.blocks[-1].forward_pooled(x))
        return self.dropout(self.pool(self.blocks(x)))


class RecordLinear(nn.Linear):
    """``nn.Linear`` whose inference result does not depend on the batch it is computed in.

    Why: float32 GEMM kernels block the reduction differently for different batch sizes, so the
    same image's probabilities differed in the 7th digit between a run and its resumed half (or the
    GUI and the CLI), and the lab record showed it. Without autograd the product is computed in
    float64 and rounded to float32: the rounding error of any blocking (~1e-16) is far below
    float32's resolution, so the result is the same to the bit except at a rounding tie (of the
    order of one value in 10^8). Training (autograd on) runs the ordinary float32 layer.
    Same parameters and state-dict keys as ``nn.Linear``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu":
            return super().forward(x)
        bias = None if self.bias is None else self.bias.double()
        return F.linear(x.double(), self.weight.double(), bias).to(x.dtype)


class LipNet(nn.Module):
    """A LipNet built from a :class:`LipNetSpec` for ``num_classes`` and ``input_size``.

    input_size: side S of the square input the dense head is sized for (ignored
    by the global-pool head, which takes any size).
    """

    def __init__(self, spec: LipNetSpec, num_classes: int, input_size: int, in_channels: int = 1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.spec = spec
        self.num_classes = num_classes
        self.input_size = input_size
        stages = []
        c = in_channels
        for i, convs in enumerate(spec.stages):
            last = i == len(spec.stages) - 1
            pool = spec.pool_last or not last
            stage = Stage(c, convs, pool=pool, dropout=spec.conv_dropout if pool else 0.0)
            stages.append(stage)
            c = stage.out_channels
        self.trunk = nn.Sequential(*stages)
        if spec.dense is None:
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Dropout(spec.head_dropout),
                RecordLinear(c, num_classes),
            )
            self.embedding_dim = c
        else:
            side = trunk_output_side(spec, input_size)
            if side < 1:
                raise ValueError(f"{spec.name} needs a larger input than {input_size}x{input_size}")
            self.head = nn.Sequential(
                nn.Flatten(),
                RecordLinear(c * side * side, spec.dense),
                nn.ReLU(inplace=True),
                nn.Dropout(spec.head_dropout),
                RecordLinear(spec.dense, num_classes),
            )
            self.embedding_dim = spec.dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_maps(x))

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output ``N x C x h x w``: fused native blocks for float32 CPU inference, PyTorch layers
        otherwise (in training, with gradients, and under autocast: :func:`emclassify.ops.native_preferred`)."""
        if self.training or torch.is_grad_enabled() or not ops.native_preferred(x):
            return self.trunk(x)
        return self.fused_trunk(x)

    def fused_trunk(self, x: torch.Tensor, native: Optional[bool] = None) -> torch.Tensor:
        """The trunk as one chain of fused conv blocks (eval-mode batch-norm statistics); inference only.

        native: as in :func:`emclassify.ops.conv_trunk` (False runs the folded
        PyTorch reference, for comparison). Output is channels-last when native.
        """
        weights, biases, paddings, pools = [], [], [], []
        for stage in self.trunk:
            blocks = list(stage.blocks)
            for i, block in enumerate(blocks):
                weight, bias = block.folded()
                weights.append(weight)
                biases.append(bias)
                paddings.append(block.padding)
                pools.append(isinstance(stage.pool, nn.MaxPool2d) and i == len(blocks) - 1)
        return ops.conv_trunk(x, weights, biases, paddings, pools, native=native)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``N x embedding_dim`` (for fusion with handcrafted features)."""
        h = self.feature_maps(x)
        for layer in list(self.head)[:-1]:
            h = layer(h)
        return h


def trunk_output_side(spec: LipNetSpec, input_size: int) -> int:
    """Spatial side of the trunk's output for an ``input_size`` square input."""
    s = input_size
    for i, convs in enumerate(spec.stages):
        for _, padding in convs:
            if padding == "valid":
                s -= 2
        if spec.pool_last or i < len(spec.stages) - 1:
            s //= 2
    return s


def min_input_size(spec: LipNetSpec) -> int:
    """Smallest square input the trunk accepts (output side >= 1)."""
    s = 1
    while trunk_output_side(spec, s) < 1:
        s += 1
    return s


def count_macs(model: LipNet, input_size: int, trunk_only: bool = False) -> int:
    """Multiply-accumulates of one forward pass on a ``1 x C x S x S`` input (conv + linear).

    Counted by ``torch.utils.flop_counter`` (FLOPs / 2) on the PyTorch layers; trunk_only: count the
    conv trunk alone (what the fused native op computes).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, model.trunk[0].blocks[0].conv.in_channels, input_size, input_size)
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:  # autograd on: the PyTorch layers, not the fused inference op
        model.trunk(x) if trunk_only else model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2
