"""The CUDA kernels' arithmetic, run on the CPU, against the pure-PyTorch references.

The per-thread work of every CUDA kernel is __host__ __device__;
tests/cuda_host_emulation.cu runs each "thread" of a launch one after another on
the CPU. With nvcc present (CI always has it) this checks indexing, padding,
pooling, statistics and resampling of the GPU code on machines without a GPU;
tests/test_native_cuda.py runs the real kernels where there is one.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from emclassify import ops
from emclassify.preprocess import MODES, NORMALIZATIONS
from test_native_conv import assert_matches_reference, random_conv_case
from test_native_ops import random_batch

HERE = Path(__file__).parent
NVCC = os.environ.get("NVCC") or shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
IMAGE_DESC = np.dtype([("offset", "<i8"), ("mask_offset", "<i8"), ("height", "<i4"), ("width", "<i4")])
_F32, _U8 = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_uint8)


@pytest.fixture(scope="module")
def emulation(tmp_path_factory):
    if not os.path.isfile(NVCC):
        pytest.skip(f"nvcc not found (looked for {NVCC}; set NVCC): cannot build the CUDA host emulation")
    lib = tmp_path_factory.mktemp("cuda") / "emulation.so"
    r = subprocess.run([NVCC, "-std=c++17", "-O2", "-Xcompiler", "-fPIC", "-shared",
                        str(HERE / "cuda_host_emulation.cu"), "-o", str(lib)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return ctypes.CDLL(str(lib))


def _ptr(a: np.ndarray, kind):
    return a.ctypes.data_as(kind)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("pool", [False, True])
def test_conv_block_threads(emulation, padding, pool):
    gen = torch.Generator().manual_seed(21)
    for n, cin, h, w, cout in [(1, 1, 4, 4, 1), (2, 1, 17, 12, 32), (3, 3, 9, 13, 7), (2, 16, 8, 8, 40)]:
        x, weight, bias = random_conv_case(gen, n, cin, h, w, cout)
        ref = ops.conv_block_reference(x, weight, bias, padding, pool)
        x_nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
        w_packed = np.ascontiguousarray(weight.permute(2, 3, 1, 0).numpy())
        out = np.full((n, ref.shape[2], ref.shape[3], cout), np.nan, np.float32)  # poisoned
        emulation.emc_host_conv_block(_ptr(x_nhwc, _F32), n, h, w, cin, _ptr(w_packed, _F32),
                                      _ptr(bias.numpy(), _F32), cout, padding, int(pool), _ptr(out, _F32))
        assert_matches_reference(torch.from_numpy(out).permute(0, 3, 1, 2), ref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_preprocess_threads(emulation, mode, normalize):
    rng = np.random.default_rng(hash(("emu", mode, normalize)) % 2**32)
    for size in (1, 7, 32):
        imgs, masks, cfg, ref = random_batch(rng, mode, normalize, size, 10)
        # The glue's packing (csrc/cuda/ops_cuda.cpp): float32 pixels, uint8 masks, one descriptor each.
        descs = np.zeros(len(imgs), IMAGE_DESC)
        pixels, mask_bytes, p_off, m_off = [], [np.zeros(1, np.uint8)], 0, 0
        for i, (img, m) in enumerate(zip(imgs, masks)):
            pixels.append(img.numpy().astype(np.float32).ravel())
            descs[i] = (p_off, -1, img.shape[0], img.shape[1])
            p_off += img.numel()
            if m is not None:
                mask_bytes.append(m.numpy().astype(np.uint8).ravel())
                descs[i]["mask_offset"] = m_off
                m_off += m.numel()
        packed = np.ascontiguousarray(np.concatenate(pixels))
        packed_masks = np.ascontiguousarray(np.concatenate(mask_bytes[1:] or mask_bytes))
        out = np.full((len(imgs), 1, size, size), np.nan, np.float32)
        emulation.emc_host_preprocess(_ptr(packed, _F32), _ptr(packed_masks, _U8), descs.ctypes.data_as(ctypes.c_void_p),
                                      len(imgs), MODES.index(mode), size, cfg.margin,
                                      NORMALIZATIONS.index(normalize), ctypes.c_double(cfg.mean),
                                      ctypes.c_double(cfg.std), _ptr(out, _F32))
        assert_matches_reference(torch.from_numpy(out), ref)
