"""The preprocessing reference against hand-computed small arrays."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emclassify.preprocess import PreprocessConfig, preprocess_one, preprocess_reference, resize_weights


def zscore(a):
    a = np.asarray(a, np.float64)
    return (a - a.mean()) / a.std()


def run(img, mask=None, **kw):
    return preprocess_one(img, mask, PreprocessConfig(**kw)).numpy()


def test_surround_same_size_is_plain_zscore():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_allclose(run(img, mode="surround", size=4), zscore(img), atol=1e-6)


def test_crop_uses_mask_bounding_box():
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    mask = np.zeros((6, 6), bool)
    mask[1, 2] = mask[3, 4] = True  # bbox rows 1..3, cols 2..4
    np.testing.assert_allclose(run(img, mask, mode="crop", size=3), zscore(img[1:4, 2:5]), atol=1e-6)


def test_crop_without_mask_removes_margin_and_clamps():
    img = np.random.default_rng(0).integers(0, 255, (10, 10)).astype(np.uint8)
    np.testing.assert_allclose(run(img, mode="crop", size=4, margin=3), zscore(img[3:7, 3:7]), atol=1e-5)
    # margin larger than the image leaves the central pixel(s): (10-1)//2 = 4 per side
    np.testing.assert_allclose(run(img, mode="crop", size=2, margin=50), zscore(img[4:6, 4:6]), atol=1e-5)


def test_empty_mask_behaves_as_no_mask():
    img = np.random.default_rng(1).normal(size=(9, 9)).astype(np.float32)
    empty = np.zeros((9, 9), bool)
    np.testing.assert_array_equal(run(img, empty, mode="mask", size=5, margin=2),
                                  run(img, None, mode="crop", size=5, margin=2))


def test_mask_mode_replaces_outside_by_background_mean():
    img = np.array([[10, 10, 10, 10],
                    [10, 50, 90, 10],
                    [10, 70, 20, 40]], np.float32)
    mask = np.array([[0, 0, 0, 0],
                     [0, 1, 1, 0],
                     [0, 1, 0, 0]], bool)
    bg = img[~mask].mean()          # (8 * 10 + 20 + 40) / 9
    region = np.array([[50, 90], [70, bg]])
    out = run(img, mask, mode="mask", size=2)
    np.testing.assert_allclose(out, zscore(region), atol=1e-6)


def test_aspect_kept_and_padded_with_normalised_mean():
    img = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.uint8)  # 2 x 4 -> placed in 4 x 4 at rows 1..2
    out = run(img, mode="surround", size=4)
    np.testing.assert_allclose(out[1:3], zscore(img), atol=1e-6)
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[3], 0)


def test_minmax_and_fixed():
    img = np.array([[0, 10], [20, 40]], np.uint16)
    np.testing.assert_allclose(run(img, size=2, normalize="minmax"), img / 40.0, atol=1e-7)
    np.testing.assert_allclose(run(img, size=2, normalize="fixed", mean=10.0, std=5.0), (img.astype(float) - 10) / 5.0, atol=1e-6)
    # minmax padding takes the normalised mean: (17.5 - 0) / 40
    out = run(np.array([[0, 10, 20, 40]], np.uint16), size=4, normalize="minmax")
    np.testing.assert_allclose(out[0], 17.5 / 40, atol=1e-7)


def test_resize_weights_hand_computed_downscale_by_two():
    w = resize_weights(4, 2).numpy()
    # output 0: centre 1.0, support 2 -> raw weights 0.75, 0.75, 0.25, 0 (sum 1.75)
    np.testing.assert_allclose(w[0], np.array([0.75, 0.75, 0.25, 0]) / 1.75)
    np.testing.assert_allclose(w[1], np.array([0, 0.25, 0.75, 0.75]) / 1.75)
    np.testing.assert_allclose(resize_weights(7, 7).numpy(), np.eye(7))
    up = resize_weights(2, 4).numpy()  # bilinear upscale
    np.testing.assert_allclose(up[1], [0.75, 0.25])
    np.testing.assert_allclose(up.sum(1), 1)


def test_constant_image_gives_zeros_not_nan():
    out = run(np.full((5, 7), 3, np.uint8), size=8)
    assert np.isfinite(out).all() and np.abs(out).max() == 0


def test_ragged_batch_and_dtypes():
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 255, (30, 50)).astype(np.uint8),
            rng.integers(0, 65535, (7, 3)).astype(np.uint16),
            rng.normal(size=(1, 1)).astype(np.float32),
            torch.rand(64, 64)]
    out = preprocess_reference(imgs, None, PreprocessConfig(size=16))
    assert out.shape == (4, 1, 16, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    np.testing.assert_array_equal(out[0, 0].numpy(), run(imgs[0], size=16))


def test_config_validation():
    with pytest.raises(ValueError, match="unknown input mode"):
        PreprocessConfig(mode="cropped")
    with pytest.raises(ValueError, match="normalisation"):
        PreprocessConfig(normalize="l2")
    with pytest.raises(ValueError, match="std > 0"):
        PreprocessConfig(normalize="fixed", std=0.0)
    cfg = PreprocessConfig(mode="mask", size=48)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
