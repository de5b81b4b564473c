"""Minimal writers of Gatan DigitalMicrograph 3 and 4 (``.dm3``, ``.dm4``) and TIA (``.ser``) images, for tests only.

Neither format has a writer in rosettasciio and no permissively licensed sample file is at hand,
so these write the smallest files that follow the published layouts (DM3/DM4: a big-endian tag tree
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


def _dm_length(version: int) -> str:
    """Counts and sizes are 4 bytes in DM3, 8 in DM4 (both big-endian)."""
    return ">l" if version == 3 else ">q"


def _dm_data(version: int, name: str, info, payload: bytes) -> bytes:
    n = _dm_length(version)
    body = b"%%%%" + struct.pack(n, len(info)) + b"".join(struct.pack(n, v) for v in info) + payload
    size = b"" if version == 3 else struct.pack(">q", len(body))  # DM4 states each tag's size first
    return b"\x15" + _dm_name(name) + size + body


def _dm_group(version: int, name: str, entries) -> bytes:
    body = b"\x00\x01" + struct.pack(_dm_length(version), len(entries)) + b"".join(entries)
    size = b"" if version == 3 else struct.pack(">q", len(body))
    return b"\x14" + _dm_name(name) + size + body


def _dm_float(version: int, name: str, value: float) -> bytes:
    return _dm_data(version, name, [6], struct.pack("<f", value))


def _dm_long(version: int, name: str, value: int) -> bytes:
    return _dm_data(version, name, [3], struct.pack("<l", value))


def _dm_text(version: int, name: str, text: str) -> bytes:
    codes = [ord(c) for c in text]
    return _dm_data(version, name, [20, 4, len(codes)], struct.pack(f"<{len(codes)}H", *codes))


def write_dm(path: Path, image: np.ndarray, scale: float, units: str, version: int = 3) -> None:
    """``image`` (H, W) as a DM3 or DM4 (``version``) file whose both axes are calibrated ``scale``
    ``units`` per pixel. DM4 differs from DM3 only in 8-byte counts and in stating each tag's size."""
    v = version
    image = np.ascontiguousarray(image)
    h, w = image.shape
    dimension = lambda: _dm_group(v, "", [_dm_float(v, "Origin", 0.0), _dm_float(v, "Scale", scale),
                                          _dm_text(v, "Units", units)])
    image_data = _dm_group(v, "ImageData", [
        _dm_group(v, "Calibrations", [
            _dm_group(v, "Brightness", [_dm_float(v, "Origin", 0.0), _dm_float(v, "Scale", 1.0),
                                        _dm_text(v, "Units", "")]),
            _dm_group(v, "Dimension", [dimension(), dimension()]),
        ]),
        _dm_data(v, "Data", [20, _DM_ELEMENT_TYPE[image.dtype], image.size],
                 image.astype(image.dtype.newbyteorder("<")).tobytes()),
        _dm_long(v, "DataType", _DM_IMAGE_TYPE[image.dtype]),
        _dm_group(v, "Dimensions", [_dm_long(v, "", w), _dm_long(v, "", h)]),  # DM lists X (width) first
    ])
    entry = _dm_group(v, "", [image_data, _dm_group(v, "ImageTags", []), _dm_text(v, "Name", Path(path).stem)])
    root = b"\x00\x01" + struct.pack(_dm_length(v), 1) + _dm_group(v, "ImageList", [entry])
    Path(path).write_bytes(struct.pack(">l", v) + struct.pack(_dm_length(v), len(root)) + struct.pack(">l", 1) + root)


def write_dm3(path: Path, image: np.ndarray, scale: float, units: str) -> None:
    """``image`` (H, W) as a DM3 file (:func:`write_dm`)."""
    write_dm(path, image, scale, units, version=3)


def write_dm4(path: Path, image: np.ndarray, scale: float, units: str) -> None:
    """``image`` (H, W) as a DM4 file (:func:`write_dm`)."""
    write_dm(path, image, scale, units, version=4)


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
