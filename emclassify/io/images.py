"""Reading one particle image (or mask) file, with a clear reason when it can't be.

:func:`read_image` returns a :class:`LoadedImage` holding a 2-D array of dtype
uint8, uint16 or float32 (signed integers become float32; values unchanged),
the file's SHA-256 and any warnings. Every failure is an :class:`ImageReadError`
whose message names the file and the problem; callers record it and go on.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from .microscope import MICROSCOPE_EXTENSIONS, NotOneImage, read_microscope_file, tiff_pixel_size_nm
from .tiff_fast import InflationError, decode_baseline_tiff

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp") + MICROSCOPE_EXTENSIONS
MAX_SIDE = 16384          # px; 16k x 4k micrographs are read, larger sides are refused
MAX_PIXELS = 64 * 2**20   # 64 Mpx, guards memory before decoding
# Bytes read from one file at most: 64 Mpx of float32 plus headers. Checked with stat() before
# reading, and the read itself stops there, so a huge or growing file cannot exhaust memory.
MAX_FILE_BYTES = MAX_PIXELS * 4 + 2**20

# tifffile logs decoder chatter (e.g. odd tags) through logging; real problems raise and become
# error rows, so its log lines would only be noise on the terminal and break ``--quiet``.
logging.getLogger("tifffile").setLevel(logging.ERROR)

_OBJECT_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")

PathLike = Union[str, os.PathLike]


class ImageReadError(Exception):
    """A file that cannot be used as a particle image; the message says why."""

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class LoadedImage:
    """A decoded greyscale image.

    array: (H, W) uint8 | uint16 | float32, raw intensities.
    sha256: hex digest of the file's bytes (the lab record's identity of the file).
    warnings: human-readable notes (e.g. RGB converted to grey).
    pixel_size_nm: nm per pixel as the file's metadata records it (:mod:`.microscope`), else None.
    """

    array: np.ndarray
    sha256: str
    warnings: List[str] = field(default_factory=list)
    pixel_size_nm: Optional[float] = None

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])


def is_image_file(path: PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _sniff(data: bytes) -> Optional[str]:
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:2] == b"BM":
        return "bmp"
    return None


def _check_dimensions(path: PathLike, height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ImageReadError(path, f"image has no pixels ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ImageReadError(
            path,
            f"image is {width}x{height} px, larger than emclassify reads "
            f"(limit {MAX_SIDE} px per side, {MAX_PIXELS // 2**20} Mpx)",
        )


def _rgb_to_grey(path: PathLike, arr: np.ndarray, notes: List[str]) -> np.ndarray:
    channels = arr.shape[2]
    rgb = arr[..., :3] if channels >= 3 else arr[..., :1]
    if channels == 2 or channels == 4:
        notes.append("alpha channel ignored")
    if channels >= 3:
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            notes.append("RGB image with identical channels read as grey")
            return np.ascontiguousarray(rgb[..., 0])
        grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        notes.append("RGB image converted to grey (ITU-R 601 luma)")
        if np.issubdtype(arr.dtype, np.integer):
            return np.clip(np.rint(grey), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
        return grey.astype(np.float32)
    return np.ascontiguousarray(rgb[..., 0])


def _normalise_dtype(path: PathLike, arr: np.ndarray, notes: List[str], missing_ok: bool = False) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        finite = np.isfinite(out)
        if not finite.all():
            if not missing_ok:
                raise ImageReadError(path, "image contains NaN or infinite values")
            held = int(np.count_nonzero(finite))
            if held == 0:
                raise ImageReadError(path, "no pixel holds a value (all NaN or infinite)")
            notes.append(f"{100.0 * (out.size - held) / out.size:.1f} % of the pixels hold no value (NaN or "
                         "infinite): no data there")
        return out
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype.itemsize > 2:
            notes.append(f"{arr.dtype} pixels read as float32")
        return arr.astype(np.float32)
    raise ImageReadError(path, f"unsupported pixel type {arr.dtype}")


def _decode_tiff(path: PathLike, data: bytes) -> np.ndarray:
    fast = decode_baseline_tiff(data, MAX_SIDE, MAX_PIXELS)
    if fast is not None:
        return fast
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        n_pages = len(tif.pages)
        if n_pages == 0:
            raise ImageReadError(path, "cannot decode TIFF (damaged or truncated file?): no readable image in it")
        if n_pages > 1:
            raise ImageReadError(
                path, f"multi-page TIFF ({n_pages} pages); one particle image per file is expected"
            )
        page = tif.pages[0]
        shape = page.shape
        if len(shape) == 3 and shape[-1] not in (1, 2, 3, 4):
            raise ImageReadError(path, f"TIFF holds a stack of shape {shape}, not one greyscale image")
        _check_dimensions(path, int(shape[0]), int(shape[1]) if len(shape) > 1 else 1)
        return page.asarray()


def _decode_pil(path: PathLike, data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        _check_dimensions(path, height, width)
        n_frames = getattr(im, "n_frames", 1)
        if n_frames > 1:
            raise ImageReadError(path, f"multi-frame image ({n_frames} frames); one particle per file")
        im.load()
        mode = im.mode
        if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGBA" if "A" in mode else "RGB")
        elif mode == "LA":
            im = im.convert("L")
        elif mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        return np.asarray(im)


def decode_image(path: PathLike, data: bytes, checksum: bool = True, with_pixel_size: bool = True,
                 missing_ok: bool = False) -> LoadedImage:
    """Decode image bytes (already read from ``path``) into a :class:`LoadedImage`.

    checksum: compute the SHA-256 of the bytes (else ``sha256`` is "": masks need none).
    with_pixel_size: read the pixel size from TIFF metadata (masks need none). MRC/DM/EMD/SER
    files are decoded from ``path`` itself by their readers (:mod:`.microscope`).
    missing_ok: NaN and infinite pixels are kept as "no data" with a note (whole micrographs:
    stitched montages leave them outside the tiles) instead of refusing the file; an image with
    no finite pixel is still refused.
    """
    sha = hashlib.sha256(data).hexdigest() if checksum else ""
    if len(data) == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    kind = _sniff(data)
    microscope = Path(path).suffix.lower() in MICROSCOPE_EXTENSIONS
    if kind is None and not microscope:
        raise ImageReadError(path, "not a TIFF, PNG, JPEG or BMP image (unrecognised file contents)")
    notes: List[str] = []
    pixel_size = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decoder chatter; real problems raise
            if kind is None:
                kind = Path(path).suffix.lower().lstrip(".")
                arr, pixel_size = read_microscope_file(path)  # these readers take the file, not bytes
            elif kind == "tiff":
                arr = _decode_tiff(path, data)
                pixel_size = tiff_pixel_size_nm(data) if with_pixel_size else None
            else:
                arr = _decode_pil(path, data)
    except ImageReadError:
        raise
    except NotOneImage as exc:
        raise ImageReadError(path, str(exc)) from None
    except InflationError as exc:
        raise ImageReadError(path, f"corrupt TIFF: {exc} (a decompression bomb?)") from None
    except MemoryError:
        raise ImageReadError(path, "image too large to decode in memory") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error
        # Decoders may name their in-memory buffer ("<_io.BytesIO object at 0x7f…>"): drop the address so
        # the same file gives the same message in every run (the CSV is a record, and resume compares it).
        msg = _OBJECT_REPR.sub("the data", str(exc).strip()) or type(exc).__name__
        raise ImageReadError(path, f"cannot decode {kind.upper()} (damaged or truncated file?): {msg}") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4):
        arr = _rgb_to_grey(path, arr, notes)
    if arr.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D greyscale image, got array of shape {arr.shape}")
    _check_dimensions(path, arr.shape[0], arr.shape[1])
    arr = _normalise_dtype(path, arr, notes, missing_ok)
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # PIL hands out read-only views; torch warns about those
        arr = arr.copy()
    return LoadedImage(arr, sha, notes, pixel_size)


def read_image(path: PathLike, checksum: bool = True, with_pixel_size: bool = True,
               missing_ok: bool = False) -> LoadedImage:
    """Read and decode one image file. Raises :class:`ImageReadError` with the reason.

    checksum, with_pixel_size, missing_ok: as in :func:`decode_image`.
    """
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(path, "not a regular file (a device, pipe or socket); only regular files are read")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageReadError(path, f"file is {st.st_size / 2**20:.0f} MiB, larger than any image emclassify "
                                       f"reads ({MAX_FILE_BYTES / 2**20:.0f} MiB)")
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ImageReadError(path, f"file grew past {MAX_FILE_BYTES / 2**20:.0f} MiB while being read")
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(path, data, checksum, with_pixel_size, missing_ok)


def read_mask(path: PathLike, shape: Optional[tuple] = None) -> np.ndarray:
    """Read a mask file as a bool (H, W) array (nonzero = particle).

    ``shape``: the image's (H, W); a mismatch is an :class:`ImageReadError`.
    """
    loaded = read_image(path, checksum=False, with_pixel_size=False)
    mask = loaded.array != 0
    if shape is not None and mask.shape != tuple(shape):
        raise ImageReadError(
            path,
            f"mask is {mask.shape[1]}x{mask.shape[0]} px but its image is {shape[1]}x{shape[0]} px",
        )
    return mask
