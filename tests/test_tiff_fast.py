"""The fast baseline-TIFF reader equals tifffile wherever it answers, and declines everything else."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tifffile

from emclassify.io.images import MAX_PIXELS, MAX_SIDE, read_image
from emclassify.io.tiff_fast import decode_baseline_tiff


def _tiff(arr, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def _with_short_tag(data: bytes, tag: int, value: int) -> bytes:
    """``data`` (little-endian TIFF) with one SHORT tag of its first IFD set to ``value``."""
    out = bytearray(data)
    (ifd,) = struct.unpack_from("<I", out, 4)
    (n,) = struct.unpack_from("<H", out, ifd)
    for i in range(n):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", out, entry)[0] == tag:
            struct.pack_into("<HHIH", out, entry, tag, 3, 1, value)
            return bytes(out)
    raise AssertionError(f"tag {tag} not in the file")


def _fast(data):
    return decode_baseline_tiff(data, MAX_SIDE, MAX_PIXELS)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("rowsperstrip", [None, 1, 7])
def test_equal_to_tifffile(dtype, byteorder, compression, rowsperstrip):
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (5, 3), (64, 97), (150, 151)]:
        arr = (rng.random((h, w)) * 60000).astype(dtype)
        data = _tiff(arr, byteorder=byteorder, compression=compression, rowsperstrip=rowsperstrip,
                     photometric="minisblack")
        out = _fast(data)
        assert out is not None, "a baseline file was not taken by the fast path"
        expected = tifffile.imread(io.BytesIO(data))
        assert out.dtype == expected.dtype and out.dtype.isnative and out.flags.writeable
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("case", ["rgb", "predictor", "tiled", "two_pages", "int16", "float64", "lzw",
                                  "truncated", "big", "miniswhite"])
def test_declines_what_it_does_not_handle(case):
    arr = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    if case == "rgb":
        data = _tiff(np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    elif case == "predictor":
        data = _tiff(arr, compression="zlib", predictor=True)
    elif case == "tiled":
        data = _tiff(arr, tile=(16, 16))
    elif case == "two_pages":
        buf = io.BytesIO()
        with tifffile.TiffWriter(buf) as tw:
            tw.write(arr)
            tw.write(arr)
        data = buf.getvalue()
    elif case == "int16":
        data = _tiff(arr.astype(np.int16))
    elif case == "float64":
        data = _tiff(arr.astype(np.float64))
    elif case == "lzw":  # the Compression tag of a plain file rewritten to 5 (LZW)
        data = _with_short_tag(_tiff(arr), 259, 5)
    elif case == "truncated":
        data = _tiff(arr)[:-100]
    elif case == "big":
        data = _tiff(arr)
        assert decode_baseline_tiff(data, max_side=32, max_pixels=MAX_PIXELS) is None
        return
    else:
        data = _tiff(arr.astype(np.uint8), photometric="miniswhite")
    assert _fast(data) is None


def test_read_image_still_reports_damaged_files(tmp_path):
    arr = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    path = tmp_path / "cut.tif"
    path.write_bytes(_tiff(arr)[:-100])
    from emclassify.io.images import ImageReadError

    with pytest.raises(ImageReadError, match="cut.tif"):
        read_image(path)
