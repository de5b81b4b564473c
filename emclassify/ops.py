"""Thin wrappers over the native ops, each with its pure-PyTorch reference.

Each wrapper runs ``torch.ops.emclassify.<op>`` when the native library is
loaded (and ``EMCLASSIFY_NATIVE`` is not 0), else its reference:

- ``preprocess`` -> :func:`emclassify.preprocess.preprocess_reference`
- ``conv_block`` -> :func:`conv_block_reference`
- ``conv_trunk`` -> :func:`conv_trunk_reference` (a chain of conv blocks)

Both give the same result to float32 rounding; the tests hold every native op
to its reference.

The training ops run inside the training step on the CPU (:func:`training_ops_preferred`):

- ``bn_relu_train`` -> :func:`bn_relu_train_reference` (batch-norm with batch statistics, then
  ReLU; differentiable: its backward is the native ``bn_relu_train_backward``), and
  ``bn_relu_pool_train`` -> :func:`bn_relu_pool_train_reference` (the same, then 2x2 max-pool)
- ``dropout`` -> :func:`dropout_reference` (same distribution; the native op draws its own mask)

Image analysis (numpy in, numpy out; CPU):

- ``reconstruct_by_dilation`` -> scikit-image's ``morphology.reconstruction`` (the same result
  exactly), the step of the h-maxima transform in the classical particle finder;
- ``median3x3`` -> SciPy's ``ndimage.median_filter(image, 3)`` (the same result exactly);
- ``distance_transform_edt`` -> SciPy's ``ndimage.distance_transform_edt(mask)`` (the same result
  exactly), the distances by which the finder measures each object's edge and surroundings.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ._native import native_available
from .preprocess import ArrayLike, PreprocessConfig, preprocess_reference, to_bool_mask

_NATIVE_DTYPES = (torch.uint8, torch.uint16, torch.float32)


def _as_image_tensor(image: ArrayLike) -> torch.Tensor:
    t = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    return t if t.dtype in _NATIVE_DTYPES else t.to(torch.float32)


def preprocess(
    images: Sequence[ArrayLike],
    masks: Optional[Sequence[Optional[ArrayLike]]],
    cfg: PreprocessConfig,
    native: Optional[bool] = None,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Ragged batch of 2-D images (+ optional masks) -> float32 ``N x 1 x S x S``.

    images: uint8 / uint16 / float arrays or tensors, any sizes.
    masks: None, or one entry per image (None or a same-shape array; nonzero = particle).
    native: force (True) or forbid (False) the native op; None = use it when available.
    device: where the native op runs and the result lives (default: the CPU); the raw
    images are uploaded, not the preprocessed batch. The reference always runs on the CPU.
    """
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    use_native = native_available() if native is None else native
    if not use_native or len(images) == 0:
        out = preprocess_reference(images, masks, cfg)
        return out if device is None else out.to(device)
    imgs = [_as_image_tensor(im) for im in images]
    msks = [to_bool_mask(m) for m in masks] if masks is not None else [None] * len(imgs)
    if device is not None:
        imgs = [t.to(device) for t in imgs]
        msks = [None if m is None else m.to(device) for m in msks]
    return torch.ops.emclassify.preprocess(
        imgs, msks, cfg.mode, cfg.size, cfg.margin, cfg.normalize, float(cfg.mean), float(cfg.std)
    )


def conv_block_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int,
                         pool: bool) -> torch.Tensor:
    """Inference conv block in plain PyTorch: conv 3x3 + bias -> ReLU -> optional 2x2 max-pool.

    x: float32 ``N x Cin x H x W``; weight: ``Cout x Cin x 3 x 3`` and bias: ``Cout``
    with batch-norm already folded in (:meth:`emclassify.models.lipnet.ConvBlock.folded`);
    padding: 1 ("same") or 0 ("valid"). Returns float32 ``N x Cout x H' x W'``.
    """
    y = F.relu(F.conv2d(x, weight, bias, padding=padding))
    return F.max_pool2d(y, 2) if pool else y


def native_preferred(x: torch.Tensor) -> bool:
    """Whether the fused native conv op is the faster choice for ``x`` (the default of ``native=None``).

    CPU (float32, library loaded): yes; BENCHMARKS.md measures about twice the best tuned PyTorch
    trunk. GPU: no. On an H200 (BENCHMARKS.md "GPU") cuDNN ran the bundled model's trunk at 157,000
    images/s against the fused CUDA kernel's 24,000, so a model on a GPU runs its PyTorch layers.
    ``native=True`` still runs the CUDA conv kernels (tests, ``emclassify bench``).
    Under autocast: no, since the native ops compute in float32 only (each epoch's validation runs in
    the training steps' bf16 autocast through the PyTorch layers).
    """
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and native_available())


def conv_block(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int, pool: bool,
               native: Optional[bool] = None) -> torch.Tensor:
    """Fused inference conv block (see :func:`conv_block_reference` for shapes and semantics).

    The native op returns a channels-last tensor; values equal the reference to
    float32 rounding. native: force (True) or forbid (False) it; None = :func:`native_preferred`.
    """
    use_native = native_preferred(x) if native is None else native
    if not use_native:
        return conv_block_reference(x, weight, bias, padding, pool)
    return torch.ops.emclassify.conv_block(x, weight, bias, int(padding), bool(pool))


def conv_trunk_reference(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                         paddings: Sequence[int], pools: Sequence[bool]) -> torch.Tensor:
    """A chain of :func:`conv_block_reference` calls, layer ``i`` with ``weights[i]`` ... ``pools[i]``."""
    for weight, bias, padding, pool in zip(weights, biases, paddings, pools):
        x = conv_block_reference(x, weight, bias, padding, pool)
    return x


def conv_trunk(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
               paddings: Sequence[int], pools: Sequence[bool], native: Optional[bool] = None) -> torch.Tensor:
    """A LipNet trunk as fused conv blocks in one native call (image by image, cache-resident).

    Shapes as :func:`conv_block`, chained; returns float32 ``N x C x h x w``
    (channels-last when native). native: as in :func:`conv_block`.
    """
    if not (len(weights) == len(biases) == len(paddings) == len(pools)) or not weights:
        raise ValueError("conv_trunk needs one weight, bias, padding and pool flag per layer (at least one)")
    use_native = native_preferred(x) if native is None else native
    if not use_native:
        return conv_trunk_reference(x, weights, biases, paddings, pools)
    return torch.ops.emclassify.conv_trunk(x, list(weights), list(biases), [int(p) for p in paddings],
                                           [bool(p) for p in pools])


_training_ops_enabled = True


@contextmanager
def training_ops(enabled: bool):
    """Within the block, training steps use the native training ops only if ``enabled`` (the
    benchmark harness compares them with ATen's layers side by side in one process)."""
    global _training_ops_enabled
    before, _training_ops_enabled = _training_ops_enabled, bool(enabled)
    try:
        yield
    finally:
        _training_ops_enabled = before


def training_ops_preferred(x: torch.Tensor) -> bool:
    """Whether a training step runs the native training ops on ``x``: a float32 or bfloat16
    channels-last CPU activation ``N x C x H x W`` with the library loaded. Measured on 2 cores
    (BENCHMARKS.md "Fifth round: native training ops"): batch-norm + ReLU forward and backward and
    dropout in a fraction of ATen's time. Elsewhere (GPU, NCHW, float64) the PyTorch layers run."""
    return (_training_ops_enabled and x.device.type == "cpu" and x.dim() == 4
            and x.dtype in (torch.float32, torch.bfloat16)
            and x.is_contiguous(memory_format=torch.channels_last) and native_available())


def _use_training_op(x: torch.Tensor, native: Optional[bool]) -> bool:
    if native is None:
        return training_ops_preferred(x)
    if native and not native_available():
        raise RuntimeError("the emclassify native library is not loaded (emclassify --version says why)")
    return native


def bn_relu_train_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-norm with the batch's own statistics, then ReLU, in plain PyTorch (differentiable).

    x: float32 or bfloat16 ``N x C x H x W`` or ``N x C``; weight, bias: float32 ``C``. Returns
    ``(y, mean, var)``: y like x, the batch mean and the biased batch variance per channel (float32
    ``C``, what a batch-norm layer's running statistics are updated from).
    """
    var, mean = torch.var_mean(x.detach().float(), dim=[d for d in range(x.dim()) if d != 1], correction=0)
    y = F.relu(F.batch_norm(x, None, None, weight, bias, training=True, eps=eps))
    return y, mean, var


def bn_relu_train(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                  native: Optional[bool] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`bn_relu_train_reference`'s result, from the native op when :func:`training_ops_preferred`
    (native: force or forbid it). Differentiable in x, weight and bias either way."""
    if not _use_training_op(x, native):
        return bn_relu_train_reference(x, weight, bias, eps)
    return torch.ops.emclassify.bn_relu_train(x, weight, bias, float(eps))


def bn_relu_pool_train_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                 eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`bn_relu_train_reference` followed by 2x2 max-pool (floor): y is ``N x C x H/2 x W/2``."""
    y, mean, var = bn_relu_train_reference(x, weight, bias, eps)
    return F.max_pool2d(y, 2), mean, var


def bn_relu_pool_train(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                       native: Optional[bool] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`bn_relu_pool_train_reference`'s result, from one native op when
    :func:`training_ops_preferred` (native: force or forbid it): the full-resolution activation is
    never stored, and the backward routes each window's gradient to its recorded maximum."""
    if not _use_training_op(x, native):
        return bn_relu_pool_train_reference(x, weight, bias, eps)
    y, mean, var, _ = torch.ops.emclassify.bn_relu_pool_train(x, weight, bias, float(eps))
    return y, mean, var


def dropout_reference(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout in plain PyTorch: ``x * mask / (1 - p)`` with a Bernoulli(1 - p) mask."""
    return F.dropout(x, p, training=True)


def dropout(x: torch.Tensor, p: float, native: Optional[bool] = None) -> torch.Tensor:
    """Training-mode dropout of ``x`` (any shape, float32 or bfloat16), differentiable in x.

    The native op hashes a seed drawn from torch's default CPU generator with each element's
    index, so runs are reproducible under ``torch.manual_seed`` and independent of the thread
    count; it draws different masks from ATen's (same distribution).
    """
    if not _use_training_op(x, native):
        return dropout_reference(x, p)
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.ops.emclassify.dropout(x, float(p), seed)[0]


def reconstruct_by_dilation_reference(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey-scale reconstruction by dilation of ``seed`` under ``mask``, 8-connected (scikit-image's)."""
    from skimage.morphology import reconstruction

    return reconstruction(seed, mask, method="dilation")


def reconstruct_by_dilation(seed: np.ndarray, mask: np.ndarray, native: Optional[bool] = None) -> np.ndarray:
    """:func:`reconstruct_by_dilation_reference`'s result, exactly, from the native op when the library
    is loaded (native: force or forbid it).

    seed, mask: float32 or float64 ``H x W`` of one shape and dtype, finite, ``seed <= mask``; returns
    the reconstruction like them. Why native: scikit-image sorts every pixel, 108 ms for a 416 x 416
    map on 2 cores, half the classical finder's time on dense micrographs (BENCHMARKS.md "Finding
    particles"); the native scan-and-queue algorithm takes a few ms.
    """
    use_native = native_available() if native is None else native
    if not use_native:
        return reconstruct_by_dilation_reference(seed, mask)
    if seed.dtype not in (np.float32, np.float64) or mask.dtype != seed.dtype:
        raise ValueError(f"reconstruct_by_dilation needs float32 or float64 seed and mask of one dtype, "
                         f"got {seed.dtype} and {mask.dtype}")
    out = torch.ops.emclassify.reconstruct_by_dilation(torch.from_numpy(np.ascontiguousarray(seed)),
                                                       torch.from_numpy(np.ascontiguousarray(mask)))
    return out.numpy()


def median3x3_reference(image: np.ndarray) -> np.ndarray:
    """3 x 3 median filter (SciPy's; its "reflect" mode repeats the edge pixel for a 3 x 3 window)."""
    from scipy import ndimage

    return ndimage.median_filter(image, 3)


def median3x3(image: np.ndarray, native: Optional[bool] = None) -> np.ndarray:
    """:func:`median3x3_reference`'s result, exactly, from the native op when the library is loaded and
    the image is float32 or float64 and finite (native: force or forbid it; other images always take
    the reference). Why native: SciPy's rank filter took 17 ms per 416 x 416 float32 image, a third of
    the classical finder's time on dense micrographs (BENCHMARKS.md "Finding particles")."""
    use_native = native_available() if native is None else native
    if native is None and use_native:
        use_native = image.ndim == 2 and image.dtype in (np.float32, np.float64) and bool(np.isfinite(image).all())
    if not use_native:
        return median3x3_reference(image)
    return torch.ops.emclassify.median3x3(torch.from_numpy(np.ascontiguousarray(image))).numpy()


def distance_transform_edt_reference(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance transform (SciPy's): float64, each nonzero pixel's distance to the
    nearest zero pixel, px; zero pixels 0."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(mask)


def distance_transform_edt(mask: np.ndarray, native: Optional[bool] = None) -> np.ndarray:
    """:func:`distance_transform_edt_reference`'s result, exactly, from the native op when the library
    is loaded and ``mask`` is 2-D with a zero pixel (native: force or forbid it; other masks always
    take the reference, whose distances in a mask without zeros are from a pixel outside the image).

    mask: (H, W), any dtype, nonzero = inside; returns float64 (H, W), px. Why native: SciPy computes
    the full feature transform, ~0.15 ms per 60 x 60 crop; the finder measures each object in such
    crops, ~450 calls per 416 x 416 micrograph (BENCHMARKS.md "Finding particles").
    """
    use_native = native_available() if native is None else native
    inside = np.asarray(mask, dtype=bool)
    if native is None and use_native:
        use_native = inside.ndim == 2 and inside.size > 0 and not inside.all()
    if not use_native:
        return distance_transform_edt_reference(inside)
    return torch.ops.emclassify.distance_transform_edt(torch.from_numpy(np.ascontiguousarray(inside))).numpy()
