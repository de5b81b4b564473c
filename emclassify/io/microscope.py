"""Microscope file formats and the pixel size (nm/px) that their metadata records.

Readers (each image's pixel size comes back with it, None when the file does not say):

- ``.mrc`` (and ``.mrcs`` with one section) through **mrcfile**: the header's voxel size
  (Å/px; 0 means unset).
- ``.dm3`` / ``.dm4`` (Gatan DigitalMicrograph), ``.emd`` (Thermo Fisher Velox and Berkeley
  EMD), ``.ser`` (TIA) through **rosettasciio** (HyperSpy's readers): the signal axes' scale
  and unit.
- TIFF (:func:`tiff_pixel_size_nm`, through **tifffile**): OME-XML ``PhysicalSizeX`` with its
  unit (µm by default), ImageJ's ``unit`` with the XResolution tag, FEI/Thermo SEM/TEM
  ``PixelWidth`` (m). A plain TIFF's resolution tags (72 dpi by default) say nothing about the
  specimen and are ignored.

:func:`parse_length` reads a user's ``--pixel-size`` (``0.52nm``, ``5.2 Å``, ``0.00052 µm``,
a bare number is nm). Every failure is an :class:`~emclassify.io.images.ImageReadError` naming
the file and the problem.
"""
from __future__ import annotations

import io
import math
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

MICROSCOPE_EXTENSIONS = (".mrc", ".mrcs", ".dm3", ".dm4", ".emd", ".ser")

# nanometres per unit; keys lower-case, as microscope software writes them
_NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0, "nanometres": 1.0,
    "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "å": 0.1, "a": 0.1, "angstrom": 0.1, "ångström": 0.1,
    "pm": 1e-3, "mm": 1e6, "m": 1e9, "cm": 1e7,
}
# A pixel size outside this range (nm/px) is a metadata error, not a TEM image.
PIXEL_SIZE_RANGE_NM = (1e-4, 1e5)

_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([^\s\d/]*)\s*(?:/\s*px|/\s*pixel)?\s*$")


class PixelSizeError(ValueError):
    """A pixel size that cannot be read; the message says why."""


def nm_per_unit(unit: str) -> Optional[float]:
    """Nanometres in one ``unit`` (``nm``, ``µm``, ``Å``, …), None for a unit that is not a length."""
    return _NM_PER_UNIT.get(str(unit).strip().lower().replace("\u212b", "å"))


def plausible(nm: Optional[float]) -> Optional[float]:
    """``nm`` when it is a finite pixel size in :data:`PIXEL_SIZE_RANGE_NM`, else None."""
    if nm is None or not isinstance(nm, (int, float)) or not math.isfinite(nm):
        return None
    lo, hi = PIXEL_SIZE_RANGE_NM
    # 6 significant digits: headers store float32 (an MRC's 5.2 Å reads back as 0.51999998 nm)
    return float(f"{nm:.6g}") if lo <= nm <= hi else None


def parse_length(text: str) -> float:
    """A pixel size as a user writes it -> nm/px. ``0.52nm``, ``5.2 Å``, ``0.52`` (nm), ``0.52 nm/px``.

    Raises :class:`PixelSizeError` for anything else, or a value outside :data:`PIXEL_SIZE_RANGE_NM`.
    """
    m = _LENGTH.match(str(text))
    if not m:
        raise PixelSizeError(f"pixel size {text!r} is not a number with a length unit, e.g. 0.52nm or 5.2A")
    value = float(m.group(1))
    unit = m.group(2) or "nm"
    factor = nm_per_unit(unit)
    if factor is None:
        raise PixelSizeError(f"pixel size {text!r}: unknown unit {unit!r} (use nm, µm/um, Å/A or pm)")
    nm = plausible(value * factor)
    if nm is None:
        lo, hi = PIXEL_SIZE_RANGE_NM
        raise PixelSizeError(f"pixel size {text!r} is {value * factor:g} nm/px, outside {lo:g}-{hi:g} nm/px")
    return nm


# ---- TIFF ------------------------------------------------------------------------------------

def _ome_pixel_size(xml: str) -> Optional[float]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
            try:
                value = float(el.get("PhysicalSizeX"))
            except ValueError:
                return None
            factor = nm_per_unit(el.get("PhysicalSizeXUnit", "µm"))
            return plausible(value * factor) if factor else None
    return None


def _resolution_px_per_unit(page) -> Optional[float]:
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    value = tag.value
    try:
        num, den = value if isinstance(value, tuple) else (value, 1)
        ppu = float(num) / float(den)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return ppu if ppu > 0 and math.isfinite(ppu) else None


def tiff_pixel_size_nm(data: bytes) -> Optional[float]:
    """The pixel size (nm/px) a TIFF's metadata records (module doc), or None."""
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                if tif.is_ome and tif.ome_metadata:
                    nm = _ome_pixel_size(tif.ome_metadata)
                    if nm:
                        return nm
                page = tif.pages[0]
                ij = tif.imagej_metadata if tif.is_imagej else None
                if ij and ij.get("unit"):
                    factor = nm_per_unit(ij["unit"])
                    ppu = _resolution_px_per_unit(page)
                    if factor and ppu:
                        return plausible(factor / ppu)
                fei = getattr(tif, "fei_metadata", None)
                if fei:
                    for section in ("Scan", "EScan", "Image"):
                        width = (fei.get(section) or {}).get("PixelWidth")
                        if isinstance(width, (int, float)) and width > 0:
                            return plausible(width * 1e9)
    except Exception:  # noqa: BLE001 - metadata is optional; the image itself is read elsewhere
        return None
    return None


# ---- MRC and the rosettasciio formats --------------------------------------------------------

class NotOneImage(ValueError):
    """The file reads, but holds no single 2-D image (a stack, a spectrum): not damaged, so the
    message must not say it may be."""


def _read_mrc(path) -> Tuple[np.ndarray, Optional[float]]:
    import mrcfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(path, permissive=True, header_only=False) as mrc:
            if mrc.data is None:
                raise ValueError("no image data in the MRC file (damaged header?)")
            data = np.asarray(mrc.data)
            if data.ndim == 3:
                if data.shape[0] != 1:
                    raise NotOneImage(f"MRC stack of {data.shape[0]} sections (a movie or tilt series?); "
                                     "one image per file is expected (give the motion-corrected sum)")
                data = data[0]
            voxel = float(mrc.voxel_size.x)
    return np.array(data), plausible(voxel * 0.1) if voxel > 0 else None


def _rsciio_reader(suffix: str):
    if suffix in (".dm3", ".dm4"):
        from rsciio.digitalmicrograph import file_reader
    elif suffix == ".emd":
        from rsciio.emd import file_reader
    else:
        from rsciio.tia import file_reader
    return file_reader


def _read_rsciio(path, suffix: str) -> Tuple[np.ndarray, Optional[float]]:
    reader = _rsciio_reader(suffix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = reader(str(path), lazy=False)
    images = [s for s in signals if np.asarray(s.get("data")).ndim == 2]
    if not images:
        shapes = ", ".join(str(np.shape(s.get("data"))) for s in signals) or "none"
        raise NotOneImage(f"no 2-D image in the file (signals of shape {shapes}); a spectrum or stack?")
    signal = images[0]
    nm = None
    axes = [a for a in signal.get("axes", []) if isinstance(a, dict)]
    if axes:
        x = axes[-1]
        factor = nm_per_unit(str(x.get("units", "")))
        try:
            scale = float(x.get("scale", 0))
        except (TypeError, ValueError):
            scale = 0.0
        if factor and scale > 0:
            nm = plausible(scale * factor)
    return np.array(signal["data"]), nm


def read_microscope_file(path) -> Tuple[np.ndarray, Optional[float]]:
    """Decode an MRC/DM/EMD/SER file -> (2-D array, pixel size nm/px or None).

    Raises ValueError (or the reader's own exception) on a file that cannot be decoded; the
    caller (:func:`emclassify.io.images.read_image`) turns it into a per-file error.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".mrc", ".mrcs"):
        return _read_mrc(path)
    if suffix in (".dm3", ".dm4", ".emd", ".ser"):
        return _read_rsciio(path, suffix)
    raise ValueError(f"not a microscope format emclassify reads ({', '.join(MICROSCOPE_EXTENSIONS)})")
