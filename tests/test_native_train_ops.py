"""The native training ops (batch-norm + ReLU with batch statistics, dropout) against their
pure-PyTorch references, on every CPU kernel variant, and inside a LipNet's training step."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from conftest import NATIVE_OP_TESTS
from emclassify import ops
from emclassify._native import native_available
from emclassify.models import create_model
from emclassify.models.lipnet import ConvBlock

pytestmark = NATIVE_OP_TESTS

ISAS = ("avx512", "avx2", "generic")



@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    assert native_available()
    monkeypatch.setenv("EMCLASSIFY_CPU_ISA", request.param)
    return request.param


def _bn_case(gen, n, c, h, w, dtype, channels_last=True):
    x = (torch.randn(n, c, h, w, generator=gen) * 3 + torch.randn(1, c, 1, 1, generator=gen) * 2).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.rand(c, generator=gen) + 0.5
    bias = torch.randn(c, generator=gen) * 0.5
    grad = torch.randn(n, c, h, w, generator=gen).to(dtype)
    return x, weight, bias, grad


def _forward_backward(x, weight, bias, grad, native, op=ops.bn_relu_train):
    """(y, mean, var, grad x, grad weight, grad bias) of ``op``; grad None: a fixed random one like y."""
    x, weight, bias = (t.clone().requires_grad_() for t in (x, weight, bias))
    y, mean, var = op(x, weight, bias, 1e-5, native=native)
    if grad is None:
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(9)).to(y.dtype)
    y.backward(grad)
    return y.detach().float(), mean, var, x.grad.float(), weight.grad, bias.grad


def _assert_matches_reference(native, ref, dtype):
    names = ("y", "mean", "var", "grad x", "grad weight", "grad bias")
    # bf16 activations: the two sides round the same float32 values, which may fall either side of
    # a bf16 rounding boundary (1 ulp = 2^-8 relative)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-2, atol=2e-2)
    for name, a, b in zip(names, native, ref):
        assert torch.isfinite(a).all(), f"{name} has unwritten (NaN-poisoned) elements"
        torch.testing.assert_close(a, b, **(tol if name in ("y", "grad x") else dict(rtol=1e-4, atol=1e-3)),
                                   msg=lambda m, name=name: f"{name}: {m}")


# channel counts around the vector widths (8, 16 floats) and a single-row-per-channel case
SHAPES = [(8, 32, 12, 12), (3, 17, 5, 7), (2, 3, 1, 1), (5, 130, 3, 2), (64, 1, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bn_relu_matches_the_reference_forward_and_backward(isa, shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    case = _bn_case(gen, *shape, dtype)
    native = _forward_backward(*case, native=True)
    ref = _forward_backward(*case, native=False)
    _assert_matches_reference(native, ref, dtype)
    assert native[0].dtype == torch.float32  # compared as float; the op's own output keeps x's dtype


def _pool_forward_backward(x, weight, bias, native):
    return _forward_backward(x, weight, bias, None, native, op=ops.bn_relu_pool_train)


# odd heights and widths: the last row / column lies outside every 2x2 window (floor), as in ATen
POOL_SHAPES = [(8, 32, 12, 12), (3, 17, 7, 9), (2, 3, 2, 2), (4, 130, 5, 4), (16, 1, 3, 3)]


@pytest.mark.parametrize("shape", POOL_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bn_relu_pool_matches_the_reference_forward_and_backward(isa, shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape) + 1)
    x, weight, bias, _ = _bn_case(gen, *shape, dtype)
    native = _pool_forward_backward(x, weight, bias, native=True)
    ref = _pool_forward_backward(x, weight, bias, native=False)
    assert native[0].shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    _assert_matches_reference(native, ref, dtype)


def test_bn_relu_pool_sends_a_tied_window_gradient_to_its_first_maximum_as_aten_does():
    # equal values in every window (a constant image per channel before the affine): ATen's max-pool
    # picks the first; a different choice would move the gradient of grad x to another pixel
    x = torch.randn(6, 4, 1, 1).expand(6, 4, 4, 4).contiguous(memory_format=torch.channels_last)
    x = x + torch.arange(6.0).reshape(6, 1, 1, 1)  # different per image, constant within it
    weight, bias = torch.ones(4), torch.full((4,), 0.5)
    native = _pool_forward_backward(x, weight, bias, native=True)
    ref = _pool_forward_backward(x, weight, bias, native=False)
    for a, b in zip(native, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bn_relu_accepts_nchw_and_two_dimensional_inputs():
    gen = torch.Generator().manual_seed(3)
    x, w, b, g = _bn_case(gen, 4, 9, 6, 5, torch.float32, channels_last=False)
    for inputs in ((x, w, b, g), (x[:, :, 0, 0].contiguous(), w, b, g[:, :, 0, 0].contiguous())):
        native = _forward_backward(*inputs, native=True)
        ref = _forward_backward(*inputs, native=False)
        for a, r in zip(native, ref):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


def test_results_do_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(5)
    case = _bn_case(gen, 16, 40, 9, 9, torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _forward_backward(*case, native=True) + (torch.ops.emclassify.dropout(case[0], 0.3, 11)[1],)
        torch.set_num_threads(max(2, threads))
        many = _forward_backward(*case, native=True) + (torch.ops.emclassify.dropout(case[0], 0.3, 11)[1],)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


def test_bn_relu_errors_are_clear():
    x = torch.randn(4, 3, 5, 5)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        torch.ops.emclassify.bn_relu_train(x.double(), torch.ones(3), torch.zeros(3), 1e-5)
    with pytest.raises(RuntimeError, match="weight must be a float32 CPU vector of 3 values"):
        torch.ops.emclassify.bn_relu_train(x, torch.ones(4), torch.zeros(3), 1e-5)
    with pytest.raises(RuntimeError, match="more than one value per channel"):
        torch.ops.emclassify.bn_relu_train(x[:1, :, :1, :1], torch.ones(3), torch.zeros(3), 1e-5)
    with pytest.raises(RuntimeError, match="needs H, W >= 2"):
        torch.ops.emclassify.bn_relu_pool_train(x[:, :, :1], torch.ones(3), torch.zeros(3), 1e-5)
    with pytest.raises(RuntimeError, match="p must be in"):
        torch.ops.emclassify.dropout(x, 1.5, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_keeps_each_element_independently_with_probability_one_minus_p(isa, dtype, p):
    x = (torch.rand(8, 24, 30, 30) + 0.5).to(dtype).contiguous(memory_format=torch.channels_last)
    y, mask = torch.ops.emclassify.dropout(x, p, 1234)
    keep = 1 - p
    n = mask.numel()
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert abs(mask.float().mean().item() - keep) < 5 * (p * keep / n) ** 0.5
    expected = torch.where(mask, x.float() * (1 / keep), torch.zeros(()))
    torch.testing.assert_close(y.float(), expected, rtol=0 if dtype == torch.float32 else 1e-2, atol=0)
    # neighbours in memory (channels of one pixel, and the next pixel) are independent:
    # P(both kept) = keep^2 within sampling error
    flat = mask.permute(0, 2, 3, 1).reshape(-1).float()
    both = (flat[1:] * flat[:-1]).mean().item()
    assert abs(both - keep**2) < 5 * (keep**2 * (1 - keep**2) / n) ** 0.5


def test_dropout_is_reproducible_from_its_seed_and_handles_the_edge_probabilities():
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    a, b, c = (torch.ops.emclassify.dropout(x, 0.4, s)[1] for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    y0, m0 = torch.ops.emclassify.dropout(x, 0.0, 1)
    assert torch.equal(y0, x) and bool(m0.all())
    y1, m1 = torch.ops.emclassify.dropout(x, 1.0, 1)
    assert not bool(y1.any()) and not bool(m1.any())


@pytest.mark.parametrize("native", [True, False])
def test_dropout_and_its_reference_draw_from_the_same_distribution(native):
    x = torch.ones(16, 8, 20, 20).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(4)
    y = ops.dropout(x, 0.2, native=native)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 5 * (0.16 / kept.numel()) ** 0.5
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.8))


def test_dropout_gradient_is_the_kept_mask_over_keep():
    x = torch.randn(6, 16, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.manual_seed(0)
    y = ops.dropout(x, 0.25, native=True)
    y.sum().backward()
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    # seeded from torch's generator: the same manual seed draws the same mask
    torch.manual_seed(0)
    assert torch.equal(ops.dropout(x.detach(), 0.25, native=True) != 0, kept)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad_layout", ["like-mask", "nchw", "broadcast"])
def test_dropout_backward_matches_aten(isa, dtype, grad_layout):
    gen = torch.Generator().manual_seed(5)
    shape = (3, 37, 5, 7)  # channels around the vector widths, rows of odd length
    mask = (torch.rand(shape, generator=gen) < 0.7).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape, generator=gen).to(dtype)
    if grad_layout == "like-mask":
        grad = grad.contiguous(memory_format=torch.channels_last)
    elif grad_layout == "broadcast":  # as a global average pool's backward hands it on
        grad = torch.randn(shape[:2] + (1, 1), generator=gen).to(dtype).expand(shape)
    scale = 1 / 0.7
    got = torch.ops.emclassify.dropout_backward(grad, mask, scale)
    assert got.dtype == dtype and got.stride() == mask.stride()
    expected = torch.ops.aten.native_dropout_backward(grad.float(), mask, scale)
    # bf16: one rounding here, ATen's bf16 path rounds twice
    torch.testing.assert_close(got.float(), expected, rtol=0 if dtype == torch.float32 else 1e-2, atol=0)
    with pytest.raises(RuntimeError, match="mask must be"):
        torch.ops.emclassify.dropout_backward(grad, mask.float(), scale)
    with pytest.raises(RuntimeError, match="shape"):
        torch.ops.emclassify.dropout_backward(grad[:1], mask, scale)


def test_native_training_ops_are_chosen_for_channels_last_cpu_activations_only():
    x = torch.zeros(2, 4, 3, 3)
    assert not ops.training_ops_preferred(x)  # NCHW: the PyTorch layers
    assert ops.training_ops_preferred(x.contiguous(memory_format=torch.channels_last))
    assert not ops.training_ops_preferred(x.double().contiguous(memory_format=torch.channels_last))
    assert not ops.training_ops_preferred(torch.zeros(2, 4, 3, 3, device="meta").contiguous(
        memory_format=torch.channels_last))
    with ops.training_ops(False):
        assert not ops.training_ops_preferred(x.contiguous(memory_format=torch.channels_last))
    assert ops.training_ops_preferred(x.contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_conv_block_updates_running_statistics_as_batch_norm_does(momentum):
    torch.manual_seed(0)
    ref = ConvBlock(3, 8, "same")
    ref.bn.momentum = momentum
    native = ConvBlock(3, 8, "same")
    native.load_state_dict(ref.state_dict())
    native.bn.momentum = momentum
    for step in range(3):
        x = torch.randn(5, 3, 7, 7).contiguous(memory_format=torch.channels_last) + step
        with ops.training_ops(False):
            y_ref = ref.train()(x)
        y_native = native.train()(x)
        torch.testing.assert_close(y_native, y_ref, rtol=1e-4, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(native.bn, name), getattr(ref.bn, name), rtol=1e-5, atol=1e-6)


def test_a_pooled_stage_trains_through_the_fused_op_and_pools_as_before():
    torch.manual_seed(3)
    model = create_model("lipnet-fcn", 3, 24, dropout=0.0).to(memory_format=torch.channels_last).train()
    stage = model.trunk[0]
    x = torch.randn(4, 1, 24, 24).contiguous(memory_format=torch.channels_last)
    calls = []
    original = ops.bn_relu_pool_train
    try:
        ops.bn_relu_pool_train = lambda *a, **k: calls.append(1) or original(*a, **k)
        fused = stage(x)
    finally:
        ops.bn_relu_pool_train = original
    assert calls, "the pooled stage did not use the fused op"
    with ops.training_ops(False):
        plain = stage(x)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)


def test_a_lipnet_training_step_matches_the_pytorch_layers():
    # dropout 0: the two paths draw different dropout masks by design; everything else must agree
    torch.manual_seed(1)
    ref = create_model("lipnet-fcn", 3, 32, dropout=0.0).to(memory_format=torch.channels_last)
    native = create_model("lipnet-fcn", 3, 32, dropout=0.0).to(memory_format=torch.channels_last)
    native.load_state_dict(ref.state_dict())
    x = torch.randn(12, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (12,))
    for model, enabled in ((ref, False), (native, True)):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with ops.training_ops(enabled):
            for _ in range(3):
                model.train()
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
    for (name, a), b in zip(ref.state_dict().items(), native.state_dict().values()):
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-3, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("op", ["bn_relu_train", "bn_relu_pool_train"])
def test_opcheck(op):
    gen = torch.Generator().manual_seed(2)
    x, w, b, _ = _bn_case(gen, 4, 6, 5, 5, torch.float32)
    torch.library.opcheck(getattr(torch.ops.emclassify, op).default,
                          (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), 1e-5))


def test_opcheck_dropout_backward():
    mask = (torch.rand(2, 5, 3, 4) < 0.5).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 5, 3, 4)
    torch.library.opcheck(torch.ops.emclassify.dropout_backward.default, (grad, mask, 2.0))
