"""Finding and loading the native library ``emclassify._C``.

The library registers ``torch.ops.emclassify.*``. When it is missing or fails
to load, every op falls back to its pure-PyTorch reference, with one
:class:`EmclassifyNativeWarning`. ``EMCLASSIFY_NATIVE=0`` forces the reference
(for comparison and diagnosis) without a warning.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple


class EmclassifyNativeWarning(RuntimeWarning):
    """The native library could not be used; the pure-PyTorch reference runs instead."""


def native_disabled_by_env() -> bool:
    return os.environ.get("EMCLASSIFY_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}


_loaded: Optional[Tuple[bool, str]] = None


def _load() -> Tuple[bool, str]:
    """(loaded, why not), tried once. A plain cached global, not lru_cache: torch.compile traces
    through this call from the model's forward and handles a global read without complaint."""
    global _loaded
    if _loaded is None:
        _loaded = _try_load()
    return _loaded


def _try_load() -> Tuple[bool, str]:
    # torch first: its import loads libc10/libtorch, which _C links against without an rpath of its own.
    import torch

    try:
        from . import _C  # noqa: F401  (importing registers the ops)
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError (undefined symbol, wrong torch) ...
        return False, f"{type(exc).__name__}: {exc}"

    if not all(hasattr(torch.ops.emclassify, op) for op in ("preprocess", "conv_block", "conv_trunk")):
        return False, "emclassify._C loaded but registered no ops"
    _register_fakes()
    _register_autograd()
    return True, ""


def _register_fakes() -> None:
    """Shape-only (fake/meta) kernels, so the ops trace under torch.compile and FakeTensor."""
    import torch

    @torch.library.register_fake("emclassify::preprocess")
    def _(images, masks, mode, size, margin, normalize, mean, std):
        return images[0].new_empty((len(images), 1, size, size), dtype=torch.float32)

    def conv_output(x, weights, paddings, pools):
        h, w = x.shape[2], x.shape[3]
        for padding, pool in zip(paddings, pools):
            h, w = h + 2 * padding - 2, w + 2 * padding - 2
            if pool:
                h, w = h // 2, w // 2
        return torch.empty((x.shape[0], weights[-1].shape[0], h, w), dtype=x.dtype, device=x.device,
                           memory_format=torch.channels_last)

    @torch.library.register_fake("emclassify::conv_block")
    def _(x, weight, bias, padding, pool):
        return conv_output(x, [weight], [padding], [pool])

    @torch.library.register_fake("emclassify::conv_trunk")
    def _(x, weights, biases, paddings, pools):
        return conv_output(x, weights, paddings, pools)

    def channel_stats(x):
        return x.new_empty((x.shape[1],), dtype=torch.float32)

    @torch.library.register_fake("emclassify::bn_relu_train")
    def _(x, weight, bias, eps):
        return torch.empty_like(x, memory_format=torch.channels_last), channel_stats(x), channel_stats(x)

    @torch.library.register_fake("emclassify::bn_relu_train_backward")
    def _(grad_y, x, weight, bias, mean, var, eps):
        return torch.empty_like(x, memory_format=torch.channels_last), channel_stats(x), channel_stats(x)

    def pooled(x, dtype=None):
        return torch.empty((x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2), dtype=dtype or x.dtype,
                           device=x.device, memory_format=torch.channels_last)

    @torch.library.register_fake("emclassify::bn_relu_pool_train")
    def _(x, weight, bias, eps):
        return pooled(x), channel_stats(x), channel_stats(x), pooled(x, torch.uint8)

    @torch.library.register_fake("emclassify::bn_relu_pool_train_backward")
    def _(grad_y, x, weight, bias, mean, var, argmax, eps):
        return torch.empty_like(x, memory_format=torch.channels_last), channel_stats(x), channel_stats(x)

    @torch.library.register_fake("emclassify::dropout")
    def _(x, p, seed):
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)

    @torch.library.register_fake("emclassify::dropout_backward")
    def _(grad_y, mask, scale):
        return torch.empty_like(mask, dtype=grad_y.dtype)

    @torch.library.register_fake("emclassify::reconstruct_by_dilation")
    def _(seed, mask):
        return torch.empty_like(seed, memory_format=torch.contiguous_format)

    @torch.library.register_fake("emclassify::median3x3")
    def _(image):
        return torch.empty_like(image, memory_format=torch.contiguous_format)

    @torch.library.register_fake("emclassify::distance_transform_edt")
    def _(mask):
        return torch.empty_like(mask, dtype=torch.float64, memory_format=torch.contiguous_format)


def _register_autograd() -> None:
    """Backward formulas of the differentiable training ops (``emclassify::bn_relu_train``,
    ``emclassify::bn_relu_pool_train``, ``emclassify::dropout``)."""
    import torch

    def bn_setup(ctx, inputs, output):
        x, weight, bias, eps = inputs
        _, mean, var = output
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.eps = eps

    def bn_backward(ctx, grad_y, _grad_mean, _grad_var):
        x, weight, bias, mean, var = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = torch.ops.emclassify.bn_relu_train_backward(
            grad_y, x, weight, bias, mean, var, ctx.eps)
        return grad_x, grad_weight, grad_bias, None

    torch.library.register_autograd("emclassify::bn_relu_train", bn_backward, setup_context=bn_setup)

    def pool_setup(ctx, inputs, output):
        x, weight, bias, eps = inputs
        _, mean, var, argmax = output
        ctx.save_for_backward(x, weight, bias, mean, var, argmax)
        ctx.eps = eps

    def pool_backward(ctx, grad_y, _grad_mean, _grad_var, _grad_argmax):
        x, weight, bias, mean, var, argmax = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = torch.ops.emclassify.bn_relu_pool_train_backward(
            grad_y, x, weight, bias, mean, var, argmax, ctx.eps)
        return grad_x, grad_weight, grad_bias, None

    torch.library.register_autograd("emclassify::bn_relu_pool_train", pool_backward, setup_context=pool_setup)

    def dropout_setup(ctx, inputs, output):
        ctx.scale = 1.0 / (1.0 - inputs[1]) if inputs[1] < 1 else 0.0
        ctx.save_for_backward(output[1])

    def dropout_backward(ctx, grad_y, _grad_mask):
        (mask,) = ctx.saved_tensors
        return torch.ops.emclassify.dropout_backward(grad_y, mask, ctx.scale), None, None

    torch.library.register_autograd("emclassify::dropout", dropout_backward, setup_context=dropout_setup)


_warned = False


def native_available() -> bool:
    """True when the native ops are loaded and not disabled by ``EMCLASSIFY_NATIVE=0``."""
    global _warned
    if native_disabled_by_env():
        return False
    ok, reason = _load()
    if not ok and not _warned:
        _warned = True
        warnings.warn(
            f"emclassify native library unavailable ({reason}); using the pure-PyTorch "
            "reference ops (same predictions, slower). Reinstall with "
            "'pip install --no-build-isolation -e .' to build it.",
            EmclassifyNativeWarning,
            stacklevel=3,
        )
    return ok


def native_cuda_built() -> bool:
    """True when the loaded library has CUDA kernels."""
    if not _load()[0]:
        return False
    import torch

    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("emclassify::preprocess", "CUDA")
    except Exception:  # noqa: BLE001 - private API; absence means "don't know" -> no
        return False


def backend_description() -> str:
    """One line for ``emclassify --version``: which backend runs the ops, and why."""
    if native_disabled_by_env():
        return "reference (pure PyTorch; EMCLASSIFY_NATIVE=0)"
    ok, reason = _load()
    if ok:
        import torch

        isa = torch.ops.emclassify.conv_block_isa()
        return f"native (emclassify._C: CPU {isa}" + (" + CUDA" if native_cuda_built() else "") + ")"
    return f"reference (pure PyTorch; native library unavailable: {reason})"

