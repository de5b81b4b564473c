"""The CUDA kernels against the same pure-PyTorch references as the CPU kernels.

Runs where a CUDA GPU and a CUDA build of emclassify._C exist; skips with the
reason elsewhere. (The .cu files are compiled with nvcc for sm_80 and sm_90 by
.ci/run on every CI run, GPU or not.)
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from emclassify import ops
from emclassify._native import native_available, native_cuda_built
from emclassify.models import create_model, list_models
from emclassify.preprocess import MODES, NORMALIZATIONS
from test_native_conv import assert_matches_reference, random_conv_case
from test_native_ops import random_batch

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
    pytest.mark.skipif(os.environ.get("EMCLASSIFY_NATIVE") == "0", reason="EMCLASSIFY_NATIVE=0 forces the reference"),
]


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    assert native_available() and native_cuda_built(), (
        "a GPU is present but emclassify._C has no CUDA kernels: reinstall with a CUDA torch (or FORCE_CUDA=1)")
    monkeypatch.setenv("EMCLASSIFY_POISON_OUTPUTS", "1")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_preprocess_parity(mode, normalize):
    rng = np.random.default_rng(hash(("cuda", mode, normalize)) % 2**32)
    for size in (1, 5, 64):
        imgs, masks, cfg, ref = random_batch(rng, mode, normalize, size, 40)
        out = torch.ops.emclassify.preprocess([i.cuda() for i in imgs], [None if m is None else m.cuda() for m in masks],
                                              cfg.mode, cfg.size, cfg.margin, cfg.normalize, cfg.mean, cfg.std)
        assert out.is_cuda
        assert_matches_reference(out.cpu(), ref)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("pool", [False, True])
def test_conv_block_parity(padding, pool):
    gen = torch.Generator().manual_seed(11)
    for n, cin, h, w, cout in [(1, 1, 4, 4, 1), (2, 1, 64, 64, 32), (3, 3, 17, 31, 7), (5, 64, 16, 16, 130),
                               (512, 32, 32, 32, 64)]:
        x, weight, bias = random_conv_case(gen, n, cin, h, w, cout)
        ref = ops.conv_block_reference(x, weight, bias, padding, pool)
        out = torch.ops.emclassify.conv_block(x.cuda(), weight.cuda(), bias.cuda(), padding, pool)
        assert_matches_reference(out.cpu(), ref)


@pytest.mark.parametrize("name", list_models())
def test_conv_trunk_and_model_on_gpu(name):
    torch.manual_seed(0)
    model = create_model(name, 3, 64).eval()
    x = torch.randn(64, 1, 64, 64)
    with torch.no_grad():
        ref = model.trunk(x)  # the PyTorch layers, on the CPU
        plain = model.head(ref)
        model.cuda()
        assert_matches_reference(model.fused_trunk(x.cuda(), native=True).cpu(), ref)
    with torch.inference_mode():
        fused = model(x.cuda()).cpu()  # eval path on the GPU: the PyTorch layers (cuDNN, ops.native_preferred)
    torch.testing.assert_close(fused, plain, atol=1e-4, rtol=1e-4)


def test_opcheck_on_cuda():
    gen = torch.Generator().manual_seed(12)
    x, weight, bias = (t.cuda() for t in random_conv_case(gen, 2, 3, 9, 11, 8))
    torch.library.opcheck(torch.ops.emclassify.conv_block.default, (x, weight, bias, 1, True))
    torch.library.opcheck(torch.ops.emclassify.conv_trunk.default, (x, [weight], [bias], [0], [False]))
    imgs = [torch.rand(20, 30, device="cuda"), torch.rand(9, 4, device="cuda")]
    masks = [torch.rand(20, 30, device="cuda") > 0.5, None]
    torch.library.opcheck(torch.ops.emclassify.preprocess.default, (imgs, masks, "mask", 12, 3, "zscore", 0.0, 1.0))


def test_gpu_models_run_cudnn_by_default():
    # cuDNN ran the trunk 6.6x faster than the fused CUDA kernel on an H200 (BENCHMARKS.md "GPU").
    assert not ops.native_preferred(torch.zeros(2, 1, 8, 8, device="cuda"))
    assert ops.native_preferred(torch.zeros(2, 1, 8, 8))
