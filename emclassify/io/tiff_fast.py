"""A fast path for the plain TIFFs microscopes and emclassify itself write.

``tifffile`` parses a file in ~0.1 ms of Python per page; on a folder of
thousands of small particle crops that decoding shared the CPU with the model
and made up about a third of ``emclassify batch``'s time (BENCHMARKS.md). This
reader handles only the common baseline case — one greyscale page, strips,
uncompressed or deflate without predictor, 8/16-bit unsigned or 32-bit float,
BlackIsZero — in a few struct reads, and returns ``None`` for anything else so
that ``tifffile`` decodes it (and reports any damage). Tests hold it equal to
``tifffile`` on every layout it accepts.
"""
from __future__ import annotations

import struct
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

# Tags (TIFF 6.0)
_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_FILL_ORDER, _STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS = 266, 273, 277, 278, 279
_PLANAR, _PREDICTOR, _TILE_WIDTH, _SUB_IFDS, _SAMPLE_FORMAT = 284, 317, 322, 330, 339

# Field types -> (struct code, size)
_TYPES = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
_NO_COMPRESSION, _DEFLATE, _ADOBE_DEFLATE = 1, 8, 32946


def _read_ifd(data: bytes, order: str) -> Optional[Dict[int, Tuple[int, ...]]]:
    (offset,) = struct.unpack_from(order + "I", data, 4)
    if offset < 8 or offset + 2 > len(data):
        return None
    (count,) = struct.unpack_from(order + "H", data, offset)
    end = offset + 2 + 12 * count
    if end + 4 > len(data):
        return None
    (next_ifd,) = struct.unpack_from(order + "I", data, end)
    if next_ifd != 0:
        return None  # more than one page: tifffile reports it
    tags: Dict[int, Tuple[int, ...]] = {}
    for i in range(count):
        tag, ftype, n, value = struct.unpack_from(order + "HHI4s", data, offset + 2 + 12 * i)
        if ftype not in _TYPES:
            continue  # rationals, ASCII ...: nothing this reader needs
        code, size = _TYPES[ftype]
        if n * size <= 4:
            raw = value[: n * size]
        else:
            (ptr,) = struct.unpack(order + "I", value)
            if ptr + n * size > len(data):
                return None
            raw = data[ptr : ptr + n * size]
        tags[tag] = struct.unpack(order + code * n, raw)
    return tags


class InflationError(Exception):
    """A compressed strip inflates to more bytes than the declared image holds (a decompression bomb)."""


def decode_baseline_tiff(data: bytes, max_side: int, max_pixels: int) -> Optional[np.ndarray]:
    """The image of a baseline greyscale TIFF as (H, W) uint8/uint16/float32, or None when not that simple.

    Images over ``max_side`` px per side or ``max_pixels`` in all are left to the
    caller's checks (None), before anything is decompressed. Each deflate strip is
    inflated to at most the bytes its rows declare; a strip holding more raises
    :class:`InflationError`, so memory stays bounded by the declared image size.
    """
    try:
        return _decode(data, max_side, max_pixels)
    except (struct.error, zlib.error, ValueError, IndexError):
        return None  # anything odd: tifffile decides (and words the error)


def _decode(data: bytes, max_side: int, max_pixels: int) -> Optional[np.ndarray]:
    if data[:4] == b"II*\x00":
        order = "<"
    elif data[:4] == b"MM\x00*":
        order = ">"
    else:
        return None  # BigTIFF or not a TIFF
    tags = _read_ifd(data, order)
    if tags is None or _TILE_WIDTH in tags or _SUB_IFDS in tags:
        return None
    one = lambda tag, default: tags.get(tag, (default,))[0]  # noqa: E731
    width, height = one(_WIDTH, 0), one(_HEIGHT, 0)
    bits, samples = tags.get(_BITS, (1,)), one(_SAMPLES, 1)
    fmt, compression = one(_SAMPLE_FORMAT, 1), one(_COMPRESSION, _NO_COMPRESSION)
    if (width < 1 or height < 1 or max(width, height) > max_side or width * height > max_pixels or samples != 1 or len(bits) != 1 or one(_PHOTOMETRIC, -1) != 1
            or one(_PLANAR, 1) != 1 or one(_PREDICTOR, 1) != 1 or one(_FILL_ORDER, 1) != 1
            or compression not in (_NO_COMPRESSION, _DEFLATE, _ADOBE_DEFLATE)):
        return None
    dtype = {(8, 1): np.uint8, (16, 1): np.uint16, (32, 3): np.float32}.get((bits[0], fmt))
    if dtype is None:
        return None
    offsets, counts = tags.get(_STRIP_OFFSETS), tags.get(_STRIP_COUNTS)
    if offsets is None or counts is None or len(offsets) != len(counts):
        return None
    itemsize = np.dtype(dtype).itemsize
    rows_per_strip = min(one(_ROWS_PER_STRIP, height), height)
    if rows_per_strip < 1 or len(offsets) != -(-height // rows_per_strip):
        return None
    parts = []
    for i, (off, n) in enumerate(zip(offsets, counts)):
        if off + n > len(data):
            return None  # truncated: tifffile reports it
        chunk = data[off : off + n]
        rows = min(rows_per_strip, height - i * rows_per_strip)
        need = rows * width * itemsize
        if compression != _NO_COMPRESSION:
            inflater = zlib.decompressobj()
            chunk = inflater.decompress(chunk, need)
            if inflater.unconsumed_tail and inflater.decompress(inflater.unconsumed_tail, 1):
                raise InflationError(f"compressed strip {i} inflates beyond the {need} bytes its rows declare")
        if len(chunk) < need:
            return None
        parts.append(chunk[:need])
    buf = parts[0] if len(parts) == 1 else b"".join(parts)
    arr = np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder(order), count=height * width)
    return arr.reshape(height, width).astype(dtype, copy=True)  # native byte order, writable, owns its memory
