"""Minimal writers of Gatan DigitalMicrograph 3 (``.dm3``) and TIA (``.ser``) images, for tests only.

Neither format has a writer in rosettasciio and no permissively licensed sample file is at hand,
so these write the smallest files that follow the published layouts (DM3: a big-endian tag tree
with little-endian data, as Gatan writes on PCs; SER: the TIA series header, one 2-D element with
its X/Y calibration in metres). emclassify reads them through rosettasciio, the reader labs use, so
a test that round-trips an image and its pixel size checks emclassify's use of that reader, not
these writers' view of the format.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# ---- DigitalMicrograph 3 ---------------------------------------------------------------------

_DM_IMAGE_TYPE = {np.dtype("uint8"): 6, np.dtype("uint16"): 10, np.dtype("float32"): 2, np.dtype("int16"): 1}
_DM_ELEMENT_TYPE = {np.dtype("uint8"): 10, np.dtype("uint16"): 4, np.dtype("float32"): 6, np.dtype("int16"): 2}


def _dm_name(name: str) -> bytes:
    raw = name.encode("latin-1")
    return struct.pack(">h", len(raw)) + raw


def _dm_data(name: str, info, payload: bytes) -> bytes:
    return (b"\x15" + _dm_name(name) + b"%%%%" + struct.pack(">l", len(info))
            + b"".join(struct.pack(">l", v) for v in info) + payload)


def _dm_group(name: str, entries) -> bytes:
    return b"\x14" + _dm_name(name) + b"\x00\x01" + struct.pack(">l", len(entries)) + b"".join(entries)


def _dm_float(name: str, value: float) -> bytes:
    return _dm_data(name, [6], struct.pack("<f", value))


def _dm_long(name: str, value: int) -> bytes:
    return _dm_data(name, [3], struct.pack("<l", value))


def _dm_text(name: str, text: str) -> bytes:
    codes = [ord(c) for c in text]
    return _dm_data(name, [20, 4, len(codes)], struct.pack(f"<{len(codes)}H", *codes))


def write_dm3(path: Path, image: np.ndarray, scale: float, units: str) -> None:
    """``image`` (H, W) as a DM3 file whose both axes are calibrated ``scale`` ``units`` per pixel."""
    image = np.ascontiguousarray(image)
    h, w = image.shape
    dimension = lambda: _dm_group("", [_dm_float("Origin", 0.0), _dm_float("Scale", scale), _dm_text("Units", units)])
    image_data = _dm_group("ImageData", [
        _dm_group("Calibrations", [
            _dm_group("Brightness", [_dm_float("Origin", 0.0), _dm_float("Scale", 1.0), _dm_text("Units", "")]),
            _dm_group("Dimension", [dimension(), dimension()]),
        ]),
        _dm_data("Data", [20, _DM_ELEMENT_TYPE[image.dtype], image.size], image.astype(image.dtype.newbyteorder("<")).tobytes()),
        _dm_long("DataType", _DM_IMAGE_TYPE[image.dtype]),
        _dm_group("Dimensions", [_dm_long("", w), _dm_long("", h)]),  # DM lists X (width) first
    ])
    entry = _dm_group("", [image_data, _dm_group("ImageTags", []), _dm_text("Name", Path(path).stem)])
    root = b"\x00\x01" + struct.pack(">l", 1) + _dm_group("ImageList", [entry])
    Path(path).write_bytes(struct.pack(">lll", 3, len(root), 1) + root)


# ---- TIA .ser --------------------------------------------------------------------------------

_SER_DATA_TYPE = {np.dtype("uint8"): 1, np.dtype("uint16"): 2, np.dtype("float32"): 7, np.dtype("int16"): 5}


def write_ser(path: Path, image: np.ndarray, pixel_size_m: float) -> None:
    """``image`` (H, W) as a one-element TIA series of 2-D data, calibrated ``pixel_size_m`` per pixel."""
    image = np.ascontiguousarray(image)
    h, w = image.shape
    units = b"meters"
    dimension = struct.pack("<IddII", 1, 0.0, 1.0, 0, 0) + struct.pack("<I", len(units)) + units
    header_len = 30 + len(dimension)
    offsets_at = header_len
    data_at = offsets_at + 8  # one data offset, one tag offset (u4 each)
    element = (struct.pack("<ddI", 0.0, pixel_size_m, 0) + struct.pack("<ddI", 0.0, pixel_size_m, 0)
               + struct.pack("<HII", _SER_DATA_TYPE[image.dtype], w, h)
               + image[::-1].astype(image.dtype.newbyteorder("<")).tobytes())  # TIA stores rows bottom-up
    tag_at = data_at + len(element)
    tag = struct.pack("<HHI", 0x4152, 0, 0)
    header = struct.pack("<HHHIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, 1, 1) + struct.pack("<II", offsets_at, 1)
    Path(path).write_bytes(header + dimension + struct.pack("<II", data_at, tag_at) + element + tag)
