"""Image reading: every format we accept, and every kind of bad file, rejected with a reason."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from emclassify.io import ImageReadError, read_image, read_mask
from emclassify.io.images import MAX_SIDE

from conftest import write_tiff


@pytest.fixture
def grey8():
    return np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_integer_roundtrip(tmp_path, dtype):
    arr = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, (20, 30), dtype=dtype)
    im = read_image(write_tiff(tmp_path / "a.tif", arr))
    assert im.array.dtype == dtype
    np.testing.assert_array_equal(im.array, arr)
    assert (im.width, im.height) == (30, 20)
    assert len(im.sha256) == 64 and not im.warnings


def test_float_tiff_kept_as_float32(tmp_path):
    arr = np.random.default_rng(2).normal(size=(12, 9)).astype(np.float64)
    im = read_image(write_tiff(tmp_path / "f.tif", arr))
    assert im.array.dtype == np.float32
    np.testing.assert_allclose(im.array, arr.astype(np.float32))


@pytest.mark.parametrize("ext", ["png", "bmp"])
def test_lossless_8bit_formats(tmp_path, grey8, ext):
    p = tmp_path / f"a.{ext}"
    Image.fromarray(grey8).save(p)
    np.testing.assert_array_equal(read_image(p).array, grey8)


def test_png_16bit(tmp_path):
    arr = np.random.default_rng(3).integers(0, 65535, (15, 17), dtype=np.uint16)
    p = tmp_path / "a.png"
    Image.fromarray(arr).save(p)
    im = read_image(p)
    assert im.array.dtype == np.uint16
    np.testing.assert_array_equal(im.array, arr)


def test_jpeg_is_read_close_to_original(tmp_path):
    arr = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    p = tmp_path / "a.jpg"
    Image.fromarray(arr).save(p, quality=95)
    im = read_image(p)
    assert im.array.shape == arr.shape and im.array.dtype == np.uint8
    assert np.abs(im.array.astype(int) - arr).mean() < 3


def test_rgb_converted_with_warning(tmp_path):
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 200
    p = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(p)
    im = read_image(p)
    assert im.array.shape == (10, 10)
    assert int(im.array[0, 0]) == round(0.299 * 200)
    assert any("converted to grey" in w for w in im.warnings)


def test_rgb_tiff_with_identical_channels(tmp_path, grey8):
    p = write_tiff(tmp_path / "rgb.tif", np.stack([grey8] * 3, axis=-1))
    im = read_image(p)
    np.testing.assert_array_equal(im.array, grey8)
    assert any("identical channels" in w for w in im.warnings)


def _reason(path):
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value)  # the message names the file
    return info.value.reason


def test_multipage_tiff_rejected(tmp_path, grey8):
    p = tmp_path / "stack.tif"
    with tifffile.TiffWriter(p) as tw:
        tw.write(grey8)
        tw.write(grey8)
    assert "multi-page" in _reason(p)


def test_zero_byte_rejected(tmp_path):
    p = tmp_path / "empty.tif"
    p.write_bytes(b"")
    assert "empty file" in _reason(p)


def test_non_image_rejected(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("these are my notes, not an image")
    assert "not a TIFF, PNG, JPEG or BMP" in _reason(p)


@pytest.mark.parametrize("ext", ["tif", "png", "jpg"])
def test_truncated_rejected(tmp_path, grey8, ext):
    full = tmp_path / f"full.{ext}"
    if ext == "tif":
        tifffile.imwrite(full, grey8)
    else:
        Image.fromarray(grey8).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    assert "cannot decode" in _reason(cut)


def test_tiff_header_then_garbage_rejected(tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"II*\x00garbage")
    assert "cannot decode TIFF" in _reason(p)


def test_absurd_dimensions_rejected(tmp_path):
    p = write_tiff(tmp_path / "wide.tif", np.zeros((1, MAX_SIDE + 1), np.uint8))
    assert "larger than emclassify reads" in _reason(p)


def test_nan_float_rejected(tmp_path):
    arr = np.ones((5, 5), np.float32)
    arr[2, 2] = np.nan
    assert "NaN" in _reason(write_tiff(tmp_path / "nan.tif", arr))


def test_missing_file(tmp_path):
    assert "not found" in _reason(tmp_path / "nope.tif")


def test_mask_shape_mismatch(tmp_path):
    p = write_tiff(tmp_path / "m.tif", np.full((4, 5), 255, np.uint8))
    assert read_mask(p, (4, 5)).all()
    with pytest.raises(ImageReadError, match="mask is 5x4 px but its image is 6x4 px"):
        read_mask(p, (4, 6))
