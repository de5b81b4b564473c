"""The fused conv-block ops against their pure-PyTorch references, and the LipNet inference path.

Every CPU kernel variant (AVX-512, AVX2, generic) this machine can run is held to
the reference; outputs are poisoned with NaN first (EMCLASSIFY_POISON_OUTPUTS=1)
so an element the kernel forgot to write fails the comparison.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from emclassify import ops
from emclassify._native import native_available
from emclassify.models import create_model, list_models

pytestmark = pytest.mark.skipif(
    os.environ.get("EMCLASSIFY_NATIVE") == "0", reason="EMCLASSIFY_NATIVE=0 forces the reference path"
)

ISAS = ("avx512", "avx2", "generic")


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    assert native_available(), "emclassify._C failed to build or load (see emclassify --version)"
    monkeypatch.setenv("EMCLASSIFY_POISON_OUTPUTS", "1")


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Run the test with each CPU kernel; the op falls back to a narrower one the CPU lacks."""
    monkeypatch.setenv("EMCLASSIFY_CPU_ISA", request.param)
    return torch.ops.emclassify.conv_block_isa()


def assert_matches_reference(out, ref):
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert not torch.isnan(out).any(), "an output element was never written"
    scale = max(1.0, float(ref.abs().max()))
    err = float((out - ref).abs().max()) / scale
    assert err <= 1e-5, f"max error {err:.2e} relative to output scale {scale:.3g}"


def random_conv_case(gen, n, cin, h, w, cout):
    x = torch.randn(n, cin, h, w, generator=gen)
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (3 * cin ** 0.5)
    bias = torch.randn(cout, generator=gen)
    return x, weight, bias


def test_kernel_choice_is_reported_and_validated(monkeypatch):
    assert torch.ops.emclassify.conv_block_isa() in ISAS
    monkeypatch.setenv("EMCLASSIFY_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="EMCLASSIFY_CPU_ISA must be"):
        torch.ops.emclassify.conv_block_isa()


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("pool", [False, True])
def test_conv_block_parity_random_shapes(isa, padding, pool):
    gen = torch.Generator().manual_seed(hash((isa, padding, pool)) % 2**31)
    rng = np.random.default_rng(hash((isa, padding, pool)) % 2**32)
    shapes = [(1, 1, 3, 3, 1), (2, 1, 64, 64, 32), (3, 3, 17, 31, 7), (1, 32, 40, 9, 64), (5, 64, 16, 16, 130),
              (2, 128, 6, 6, 128), (33, 5, 4, 12, 16)]
    shapes += [(int(rng.integers(1, 6)), int(rng.integers(1, 70)), int(rng.integers(4, 30)),
                int(rng.integers(4, 30)), int(rng.integers(1, 100))) for _ in range(6)]
    for n, cin, h, w, cout in shapes:
        if min(h, w) + 2 * padding - 2 < (2 if pool else 1):
            continue  # too small for this block (the error is tested below)
        x, weight, bias = random_conv_case(gen, n, cin, h, w, cout)
        ref = ops.conv_block_reference(x, weight, bias, padding, pool)
        assert_matches_reference(ops.conv_block(x, weight, bias, padding, pool, native=True), ref)


def test_conv_block_takes_any_input_layout_and_returns_channels_last():
    gen = torch.Generator().manual_seed(3)
    x, weight, bias = random_conv_case(gen, 4, 8, 12, 10, 16)
    ref = ops.conv_block_reference(x, weight, bias, 1, True)
    for inp in (x, x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3)):
        out = ops.conv_block(inp, weight, bias, 1, True, native=True)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert_matches_reference(out, ref)


def test_smallest_inputs_and_batch_size_one():
    gen = torch.Generator().manual_seed(4)
    for h, w, padding, pool in [(1, 1, 1, False), (3, 3, 0, False), (2, 2, 1, True), (4, 4, 0, True), (1, 7, 1, False)]:
        x, weight, bias = random_conv_case(gen, 1, 2, h, w, 5)
        assert_matches_reference(ops.conv_block(x, weight, bias, padding, pool, native=True),
                      ops.conv_block_reference(x, weight, bias, padding, pool))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("batch", [1, 3, 64])  # below and above the image-by-image threshold
def test_conv_trunk_matches_the_chain_of_blocks(isa, name, batch):
    torch.manual_seed(batch)
    model = create_model(name, 3, 64).eval()
    for m in model.modules():  # non-trivial batch-norm statistics, so folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(batch, 1, 64, 64)
    with torch.no_grad():
        ref = model.trunk(x)  # the training layers: conv, batch-norm, ReLU, max-pool, dropout (off)
        assert_matches_reference(model.fused_trunk(x, native=False), ref)
        assert_matches_reference(model.fused_trunk(x, native=True), ref)


def test_opcheck():
    gen = torch.Generator().manual_seed(5)
    x, weight, bias = random_conv_case(gen, 2, 3, 9, 11, 8)
    for padding in (0, 1):
        for pool in (False, True):
            torch.library.opcheck(torch.ops.emclassify.conv_block.default, (x, weight, bias, padding, pool))
    _, w2, b2 = random_conv_case(gen, 1, 8, 1, 1, 16)
    torch.library.opcheck(torch.ops.emclassify.conv_trunk.default,
                          (x, [weight, w2], [bias, b2], [1, 0], [True, False]))


def test_errors_are_clear():
    x = torch.zeros(1, 3, 8, 8)
    w, b = torch.zeros(4, 3, 3, 3), torch.zeros(4)
    with pytest.raises(RuntimeError, match="weight must be float32 Cout x 2 x 3 x 3"):
        torch.ops.emclassify.conv_block(torch.zeros(1, 2, 8, 8), w, b, 1, False)
    with pytest.raises(RuntimeError, match="too small for a 3x3 conv"):
        torch.ops.emclassify.conv_block(torch.zeros(1, 3, 2, 8), w, b, 0, False)
    with pytest.raises(RuntimeError, match="too small for 2x2 max-pool"):
        torch.ops.emclassify.conv_block(torch.zeros(1, 3, 3, 3), w, b, 0, True)
    with pytest.raises(RuntimeError, match="input must be float32"):
        torch.ops.emclassify.conv_block(x.double(), w, b, 1, False)
    with pytest.raises(RuntimeError, match="one entry per layer"):
        torch.ops.emclassify.conv_trunk(x, [w], [b, b], [1], [False])


def test_fake_kernels_give_the_real_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    gen = torch.Generator().manual_seed(6)
    x, weight, bias = random_conv_case(gen, 2, 3, 13, 10, 8)
    _, w2, b2 = random_conv_case(gen, 1, 8, 1, 1, 4)
    real_block = torch.ops.emclassify.conv_block(x, weight, bias, 0, True)
    real_trunk = torch.ops.emclassify.conv_trunk(x, [weight, w2], [bias, b2], [1, 1], [True, False])
    with FakeTensorMode() as mode:
        fx, fw, fb, fw2, fb2 = (mode.from_tensor(t) for t in (x, weight, bias, w2, b2))
        block = torch.ops.emclassify.conv_block(fx, fw, fb, 0, True)
        trunk = torch.ops.emclassify.conv_trunk(fx, [fw, fw2], [fb, fb2], [1, 1], [True, False])
    assert block.shape == real_block.shape and block.stride() == real_block.stride()
    assert trunk.shape == real_trunk.shape and trunk.stride() == real_trunk.stride()


def test_model_inference_uses_the_fused_path_and_training_does_not(monkeypatch):
    model = create_model("lipnet4", 3, 48).eval()
    x = torch.randn(4, 1, 48, 48)
    calls = []
    real = torch.ops.emclassify.conv_trunk

    class Spy:
        default = real.default

        def __call__(self, *args):
            calls.append(1)
            return real(*args)

    monkeypatch.setattr(torch.ops.emclassify, "conv_trunk", Spy())
    with torch.inference_mode():
        fused = model(x)
    assert calls, "eval-mode inference did not run the native trunk"
    calls.clear()
    with torch.enable_grad():  # gradients (saliency) need the autograd-friendly layers
        plain = model(x)
    model.train()
    with torch.no_grad():
        model(x)
    assert not calls
    torch.testing.assert_close(fused, plain.detach(), atol=1e-4, rtol=1e-4)
    assert torch.equal(fused.argmax(1), plain.argmax(1))


def test_reference_env_switch_runs_the_pytorch_layers(monkeypatch):
    model = create_model("lipnet-fcn", 2, 40).eval()
    x = torch.randn(3, 1, 40, 40)
    with torch.inference_mode():
        native = model(x)
        monkeypatch.setenv("EMCLASSIFY_NATIVE", "0")
        reference = model(x)
    assert not native.isnan().any()
    torch.testing.assert_close(native, reference, atol=1e-4, rtol=1e-4)


def test_identical_predictions_on_nanoshapes_native_vs_reference(nanoshapes, monkeypatch):
    """Every NanoShapes particle through the bundled model: same class on both paths."""
    from emclassify.assets import default_model_path
    from emclassify.inference import Classifier
    from emclassify.io.datasets import load_dataset
    from emclassify.io.images import read_image, read_mask

    monkeypatch.delenv("EMCLASSIFY_POISON_OUTPUTS")
    samples = load_dataset(nanoshapes).samples
    images = [read_image(s.path).array for s in samples]
    masks = [read_mask(s.mask, im.shape) for s, im in zip(samples, images)]
    clf = Classifier.from_file(default_model_path())
    native = clf.predict_proba(images, masks)
    monkeypatch.setenv("EMCLASSIFY_NATIVE", "0")
    reference = clf.predict_proba(images, masks)
    assert len(native) == 3182
    np.testing.assert_array_equal(native.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(native, reference, atol=1e-4)


def test_model_and_op_run_under_torch_compile(monkeypatch):
    monkeypatch.delenv("EMCLASSIFY_POISON_OUTPUTS")
    model = create_model("lipnet4", 3, 48).eval()
    x = torch.randn(4, 1, 48, 48)
    blocks = [b for stage in model.trunk for b in stage.blocks]
    weights, biases = zip(*(b.folded() for b in blocks))
    trunk = torch.compile(lambda x, ws, bs: torch.ops.emclassify.conv_trunk(x, ws, bs, [1, 0, 1, 0],
                                                                            [False, True, False, True]),
                          fullgraph=True)  # the op itself traces without a graph break
    with torch.inference_mode():
        torch.testing.assert_close(trunk(x, list(weights), list(biases)), model.fused_trunk(x, native=True))
        torch.testing.assert_close(torch.compile(model)(x), model(x))
