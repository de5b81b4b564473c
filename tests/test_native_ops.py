"""The native ops against their pure-PyTorch references (the oracle), and the fallback path."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import NATIVE_OP_TESTS
from emclassify import ops
from emclassify._native import native_available
from emclassify.preprocess import MODES, NORMALIZATIONS, PreprocessConfig, preprocess_reference

pytestmark = NATIVE_OP_TESTS



def test_native_library_is_built_and_loaded():
    # The test command builds the extension; a silent fallback here would hide a broken build.
    assert native_available(), "emclassify._C failed to build or load (see emclassify --version)"


def test_library_loads_when_emclassify_is_imported_before_torch():
    # _C links libc10/libtorch without an rpath: loading it before torch failed with "libc10.so: cannot
    # open shared object file" and silently fell back to the reference (found on a GPU machine).
    code = "from emclassify._native import native_available, backend_description as d\nprint(native_available(), d())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("True"), r.stdout


def test_native_conv_is_preferred_on_the_cpu_only():
    x = torch.zeros(1, 1, 8, 8)
    assert ops.native_preferred(x)
    # cuDNN beat the fused CUDA conv kernel 6.6x on an H200 (BENCHMARKS.md "GPU"): GPU tensors run
    # the PyTorch layers by default. A meta tensor stands in for a non-CPU device here.
    assert not ops.native_preferred(torch.zeros(1, 1, 8, 8, device="meta"))


def _random_case(rng):
    h, w = (int(v) for v in rng.integers(1, 120, 2))
    kind = rng.choice(["u8", "u16", "f32"])
    if kind == "u8":
        img = torch.from_numpy(rng.integers(0, 256, (h, w)).astype(np.uint8))
    elif kind == "u16":  # large offset, small spread: the numerically hard case
        img = torch.from_numpy(rng.integers(40000, 40050, (h, w)).astype(np.uint16))
    else:
        img = torch.from_numpy(rng.normal(3, 2, (h, w)).astype(np.float32))
    r = rng.random()
    mask = None
    if r < 0.7:
        m = np.zeros((h, w), bool)
        if r > 0.1:  # else: an empty mask
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[y : y + rng.integers(1, h + 1), x : x + rng.integers(1, w + 1)] = True
            m &= rng.random((h, w)) < 0.9  # ragged masks with holes
            m[y, x] = True
        mask = torch.from_numpy(m)
    return img, mask


def random_batch(rng, mode: str, normalize: str, size: int, max_images: int):
    """1..max_images random (image, mask) cases, a matching config, and the reference output."""
    cases = [_random_case(rng) for _ in range(int(rng.integers(1, max_images)))]
    imgs, masks = [c[0] for c in cases], [c[1] for c in cases]
    cfg = PreprocessConfig(mode=mode, size=size, margin=int(rng.integers(0, 40)), normalize=normalize,
                           mean=40010.0 if normalize == "fixed" else 0.0, std=7.0)
    return imgs, masks, cfg, preprocess_reference(imgs, masks, cfg)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_parity_random_shapes_dtypes(mode, normalize):
    rng = np.random.default_rng(hash((mode, normalize)) % 2**32)
    for size in (1, 5, 32, 64):
        imgs, masks, cfg, ref = random_batch(rng, mode, normalize, size, 24)
        out = ops.preprocess(imgs, masks, cfg, native=True)
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all(), "an output element was never written"
        scale = max(1.0, float(ref.abs().max()))
        err = float((out - ref).abs().max()) / scale
        assert err <= 1e-5, f"max error {err:.2e} relative to output scale {scale:.3g}"


def test_single_pixel_batch_of_one_and_large_batch():
    cfg = PreprocessConfig(mode="crop", size=16)
    one = [torch.tensor([[7]], dtype=torch.uint8)]
    torch.testing.assert_close(ops.preprocess(one, None, cfg, native=True), preprocess_reference(one, None, cfg))
    rng = np.random.default_rng(5)
    many = [torch.from_numpy(rng.integers(0, 255, (int(rng.integers(20, 90)), 60)).astype(np.uint8))
            for _ in range(700)]
    torch.testing.assert_close(ops.preprocess(many, None, cfg, native=True),
                               preprocess_reference(many, None, cfg), atol=1e-5, rtol=0)


def test_errors_are_clear():
    with pytest.raises(RuntimeError, match="expected uint8, uint16 or float32"):
        torch.ops.emclassify.preprocess([torch.zeros(3, 3, dtype=torch.float64)], [None], "crop", 8, 0,
                                        "zscore", 0.0, 1.0)
    with pytest.raises(RuntimeError, match="unknown mode"):
        torch.ops.emclassify.preprocess([torch.zeros(3, 3)], [None], "cropped", 8, 0, "zscore", 0.0, 1.0)
    with pytest.raises(RuntimeError, match="mask 0 has shape"):
        torch.ops.emclassify.preprocess([torch.zeros(3, 3)], [torch.ones(2, 2, dtype=torch.bool)], "crop", 8, 0,
                                        "zscore", 0.0, 1.0)


def test_opcheck():
    imgs = [torch.rand(20, 30), torch.rand(9, 4)]
    masks = [torch.rand(20, 30) > 0.5, None]
    for mode in MODES:
        torch.library.opcheck(torch.ops.emclassify.preprocess.default,
                              (imgs, masks, mode, 12, 3, "zscore", 0.0, 1.0))


def test_env_switch_forces_reference_with_identical_result():
    code = (
        "import numpy as np, torch, emclassify\n"
        "from emclassify import ops\nfrom emclassify.preprocess import PreprocessConfig\n"
        "print(emclassify.backend_description())\n"
        "rng=np.random.default_rng(0)\n"
        "x=ops.preprocess([rng.integers(0,255,(50,40)).astype(np.uint8)],None,PreprocessConfig(size=16))\n"
        "np.save(__import__('sys').argv[1], x.numpy())\n"
    )

    def run(tmp, env_value, block):
        env = dict(os.environ, EMCLASSIFY_NATIVE=env_value)
        prefix = "import sys; sys.modules['emclassify._C'] = None\n" if block else ""
        r = subprocess.run([sys.executable, "-c", prefix + code, str(tmp)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout, r.stderr, np.load(tmp)

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out_native, _, a = run(os.path.join(d, "a.npy"), "1", False)
        out_ref, err_ref, b = run(os.path.join(d, "b.npy"), "0", False)
        out_missing, err_missing, c = run(os.path.join(d, "c.npy"), "1", True)
    assert out_native.startswith("native") and out_ref.startswith("reference") and "EMCLASSIFY_NATIVE=0" in out_ref
    assert "EmclassifyNativeWarning" not in err_ref  # forcing the reference is not a problem to warn about
    assert out_missing.startswith("reference") and "native library unavailable" in out_missing
    assert err_missing.count("EmclassifyNativeWarning") == 1  # one clear warning
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(b, c, atol=0)


def test_traces_under_torch_compile():
    cfg = PreprocessConfig(size=8)

    def f(img):
        return torch.ops.emclassify.preprocess([img], [None], cfg.mode, cfg.size, cfg.margin, cfg.normalize,
                                               cfg.mean, cfg.std) * 2

    img = torch.rand(10, 12)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = mode.from_tensor(img)
        assert f(fake).shape == (1, 1, 8, 8)
