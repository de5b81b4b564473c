"""Handcrafted particle features for the SVM baseline and fusion models.

:func:`particle_features` maps one image and its particle mask to a fixed-length
float64 vector (:data:`FEATURE_NAMES`, ``N_FEATURES`` entries). Without a mask,
:func:`emclassify.segment.auto_mask` supplies one (and an empty segmentation
falls back to the central disc of half the image's shorter side).

Groups (units in pixels of the original image; intensities are expressed relative
to the background = pixels outside the mask: ``(x - bg_mean) / bg_std``):

- **shape**: area, perimeter (Crofton estimate from 4-connected boundary edges
  x pi/4), circularity 4 pi A / P^2, eccentricity and major/minor axis lengths
  (from second central moments of the mask), equivalent diameter, solidity (area /
  convex-hull area).
- **moments**: the 7 Hu invariants of the mask (as -sign(h) log10|h|) and the 7
  normalised central moments eta_pq (2 <= p+q <= 3) of the particle's darkness.
- **radial profile**: mean relative intensity in ``N_RADIAL`` rings from the
  centroid out to 1.5 x the equivalent radius (radius normalised per particle).
- **edge profile**: mean gradient magnitude (Sobel of the Gaussian-smoothed image,
  sigma 1 px) in the same rings.
- **intensity**: mean, std, skewness, kurtosis and 10/50/90 % percentiles of the
  relative intensity inside the mask.
- **texture**: rotation-invariant uniform LBP (8 neighbours, radius 1) histogram
  inside the mask, 10 bins, normalised to sum 1.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from .atomic import write_bytes_atomic
from .segment import auto_mask

# Version 1 still: moments and Hu invariants moved to scikit-image with the same values (held to the
# hand-written version-1 formulas in tests/test_features.py), so models trained before keep working.
FEATURES_VERSION = 1
N_RADIAL = 16
_SHAPE = ["area", "perimeter", "circularity", "eccentricity", "major_axis", "minor_axis",
          "equivalent_diameter", "solidity"]
_HU = [f"hu{i}" for i in range(1, 8)]
_ETA = ["eta20", "eta11", "eta02", "eta30", "eta21", "eta12", "eta03"]
_RADIAL = [f"radial{i:02d}" for i in range(N_RADIAL)]
_EDGE = [f"edge{i:02d}" for i in range(N_RADIAL)]
_INTENSITY = ["int_mean", "int_std", "int_skew", "int_kurt", "int_p10", "int_p50", "int_p90"]
_LBP = [f"lbp{i}" for i in range(10)]
FEATURE_NAMES: List[str] = _SHAPE + _HU + _ETA + _RADIAL + _EDGE + _INTENSITY + _LBP
N_FEATURES = len(FEATURE_NAMES)


def _moments(weights: np.ndarray, origin: Tuple[int, int] = (0, 0)):
    """Mass, centroid (cy, cx) and the normalised central moments of a 2-D weight image, by scikit-image.

    origin: the image coordinates of ``weights[0, 0]`` when it is a crop; the centroid is returned in
    image coordinates (for a 0/1 mask exactly as from the whole image: its sums are whole numbers).
    Returns (m00, (cy, cx), mu, nu) with ``mu``/``nu`` indexed ``[row power, column power]`` up
    to order 3 (scikit-image's convention: ``nu[q, p]`` is eta_pq with p the power of x = column),
    or (0, (0, 0), None, None) for an empty image.
    """
    from skimage.measure import moments_central, moments_normalized

    oy, ox = origin
    raw = moments_central(weights, center=(-oy, -ox), order=1)  # about the image's (0, 0)
    m00 = float(raw[0, 0])
    if m00 <= 0:
        return 0.0, (0.0, 0.0), None, None
    cy, cx = raw[1, 0] / m00, raw[0, 1] / m00
    mu = moments_central(weights, center=(cy - oy, cx - ox), order=3)
    return m00, (cy, cx), mu, moments_normalized(mu, order=3)


def hu_moments(nu: np.ndarray) -> np.ndarray:
    """The 7 Hu invariants (scikit-image's ``moments_hu``) with x = column: ``nu`` as :func:`_moments`
    returns it. The transpose keeps FEATURES_VERSION 1's sign of the 7th invariant (a reflection
    flips it), which was computed with x as the first index."""
    from skimage.measure import moments_hu

    return moments_hu(np.ascontiguousarray(nu.T))


def _log_hu(h: np.ndarray) -> np.ndarray:
    return -np.sign(h) * np.log10(np.abs(h) + 1e-30)


def perimeter(mask: np.ndarray) -> float:
    """Crofton-style perimeter: 4-connected boundary edges x pi/4 (a disc of radius r -> ~2 pi r).

    Kept rather than ``skimage.measure.perimeter_crofton``: that estimator uses other directions and
    weights, so its values differ and every feature-using model (FEATURES_VERSION 1) would need
    retraining for no measured gain."""
    m = np.pad(mask.astype(np.int8), 1)
    edges = np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum()
    return float(edges) * np.pi / 4


def _solidity(mask: np.ndarray, area: float) -> float:
    from scipy.spatial import ConvexHull, QhullError

    if int(np.count_nonzero(mask)) < 3:
        return 1.0
    # The hull of a shape's pixels is the hull of each row's first and last pixel (every pixel between
    # them lies on their segment): 4 corners of 2 pixels per row instead of every pixel's 4 corners
    # (the same hull; 1.15 -> 0.18 ms per mask on average, BENCHMARKS.md "A 14,000-particle
    # cross-validation"). Pixel corners, so a one-pixel-wide shape still has a hull area.
    rows = np.nonzero(mask.any(axis=1))[0]
    sub = mask[rows]
    first = np.argmax(sub, axis=1)
    last = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    ys, xs = np.concatenate([rows, rows]), np.concatenate([first, last])
    pts = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (0, 1) for dx in (0, 1)])
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return 1.0
    return float(min(1.0, area / hull.volume)) if hull.volume > 0 else 1.0


_RIU2 = None


def _riu2_table() -> np.ndarray:
    """Map 8-bit LBP codes to rotation-invariant uniform labels 0..9 (9 = non-uniform)."""
    global _RIU2
    if _RIU2 is None:
        table = np.empty(256, np.int64)
        for code in range(256):
            bits = [(code >> i) & 1 for i in range(8)]
            transitions = sum(bits[i] != bits[(i + 1) % 8] for i in range(8))
            table[code] = sum(bits) if transitions <= 2 else 9
        _RIU2 = table
    return _RIU2


def lbp_histogram(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform LBP(8, 1) histogram of the pixels in ``mask`` (10 bins, sums to 1).

    Kept rather than ``skimage.feature.local_binary_pattern(img, 8, 1, "uniform")``: scikit-image
    samples a circle (its diagonal neighbours are interpolated at distance 1), this the 3x3 square
    ring, so the codes differ and FEATURES_VERSION 1 models would need retraining. Codes are computed
    in the mask's bounding box only, each pixel against its 8 neighbours (the image's edge pixels
    repeated beyond it), so the histogram is the same as from codes of the whole image."""
    if not mask.any():
        return np.zeros(10)
    H, W = mask.shape
    y0, y1, x0, x1 = _bounding_box(mask)
    # the box plus one pixel of context, the image's edge repeated where the box touches it
    window = img[max(y0 - 1, 0) : min(y1 + 1, H), max(x0 - 1, 0) : min(x1 + 1, W)].astype(np.float64)
    p = np.pad(window, ((int(y0 == 0), int(y1 == H)), (int(x0 == 0), int(x1 == W))), mode="edge")
    c = p[1:-1, 1:-1]
    h, w = c.shape
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    code = np.zeros((h, w), np.int64)
    for bit, (dy, dx) in enumerate(offsets):
        code |= (p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] >= c).astype(np.int64) << bit
    labels = _riu2_table()[code[mask[y0:y1, x0:x1]]]
    hist = np.bincount(labels, minlength=10).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def _bounding_box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``, end-exclusive, of the True pixels of a non-empty 2-D mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _ring_means(values: np.ndarray, ring: np.ndarray, valid: np.ndarray) -> np.ndarray:
    sums = np.bincount(ring[valid], weights=values[valid], minlength=N_RADIAL)[:N_RADIAL]
    counts = np.bincount(ring[valid], minlength=N_RADIAL)[:N_RADIAL]
    out = np.zeros(N_RADIAL)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def _fallback_mask(shape) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = max(1.0, min(h, w) / 4)
    return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r * r


# How far (px) the gradient image reads around a pixel: the Gaussian's reach (sigma 1, SciPy's
# truncate 4) plus the Sobel's 1.
_GRADIENT_REACH = 5


def particle_features(image: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Feature vector (float64, ``N_FEATURES``) of one particle. See module doc.

    Only the background statistics read the whole image; everything else is computed on the mask's
    bounding box or the rings' reach (1.5 x the equivalent radius around the centroid), with the
    gradient's context around it. The values are those of the whole-image computation (the same
    arithmetic per pixel; the moments to rounding, ~1e-15): tests/test_features.py holds them to it.
    This made features ~2x faster on synthetic 190 px liposome crops (BENCHMARKS.md), where they
    set the pace of ``batch`` with models that take features.
    """
    img = np.asarray(image, dtype=np.float64)
    m = auto_mask(img) if mask is None else np.asarray(mask) != 0
    if not m.any():
        m = _fallback_mask(img.shape)
    outside = ~m
    bg = img[outside] if outside.any() else img.ravel()
    bg_mean, bg_std = float(bg.mean()), float(bg.std()) or 1.0
    H, W = img.shape

    y0, y1, x0, x1 = _bounding_box(m)
    mc = m[y0:y1, x0:x1]
    rel_mc = (img[y0:y1, x0:x1] - bg_mean) / bg_std
    area = float(mc.sum())
    per = perimeter(mc)
    m00, (cy, cx), mu, nu = _moments(mc.astype(np.float64), origin=(y0, x0))
    cov = np.array([[mu[0, 2], mu[1, 1]], [mu[1, 1], mu[2, 0]]]) / m00  # x = column first
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1].clip(min=0)
    ecc = float(np.sqrt(1 - lam[1] / lam[0])) if lam[0] > 0 else 0.0
    shape = [area, per, 4 * np.pi * area / per**2 if per > 0 else 0.0, ecc, 4 * np.sqrt(lam[0]),
             4 * np.sqrt(lam[1]), np.sqrt(4 * area / np.pi), _solidity(mc, area)]
    hu = _log_hu(hu_moments(nu))

    darkness = np.where(mc, np.clip(-rel_mc, 0, None), 0.0)  # particles/membranes are darker than background
    d00, _, _, nu_d = _moments(darkness, origin=(y0, x0))
    # eta_pq (p = power of x = column): nu_d[q, p]
    eta_vec = [0.0] * 7 if nu_d is None else [nu_d[q, p] for p, q in ((2, 0), (1, 1), (0, 2), (3, 0), (2, 1),
                                                                     (1, 2), (0, 3))]

    # Rings: a pixel is in one when its distance from the centroid is under 1.5 radius, so only the
    # box around that disc is read; the gradient there needs _GRADIENT_REACH px of image around it.
    radius = max(np.sqrt(area / np.pi), 1.0)
    reach = 1.5 * radius
    ry0, ry1 = max(0, int(np.floor(cy - reach))), min(H, int(np.ceil(cy + reach)) + 1)
    rx0, rx1 = max(0, int(np.floor(cx - reach))), min(W, int(np.ceil(cx + reach)) + 1)
    yy = np.arange(ry0, ry1)[:, None]
    xx = np.arange(rx0, rx1)[None, :]
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (1.5 * radius)
    ring = np.minimum((r * N_RADIAL).astype(np.int64), N_RADIAL)
    valid = ring < N_RADIAL
    gy0, gy1 = max(0, ry0 - _GRADIENT_REACH), min(H, ry1 + _GRADIENT_REACH)
    gx0, gx1 = max(0, rx0 - _GRADIENT_REACH), min(W, rx1 + _GRADIENT_REACH)
    rel_g = (img[gy0:gy1, gx0:gx1] - bg_mean) / bg_std
    smooth = ndimage.gaussian_filter(rel_g, 1.0)
    rings = (slice(ry0 - gy0, ry1 - gy0), slice(rx0 - gx0, rx1 - gx0))  # the rings' box inside rel_g
    grad = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))[rings]
    radial = _ring_means(rel_g[rings], ring, valid)
    edge = _ring_means(grad, ring, valid)

    inside = rel_mc[mc]
    mean, std = float(inside.mean()), float(inside.std())
    z = (inside - mean) / std if std > 0 else np.zeros_like(inside)
    intensity = [mean, std, float((z**3).mean()), float((z**4).mean() - 3), *np.percentile(inside, [10, 50, 90])]

    vec = np.concatenate([shape, hu, eta_vec, radial, edge, intensity, lbp_histogram(img, m)]).astype(np.float64)
    return np.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0)


class FeatureCache:
    """On-disk cache of feature vectors keyed by (image sha256, mask sha256, feature version).

    Lives in ``$EMCLASSIFY_CACHE`` or ``~/.cache/emclassify/features-v{version}``; one
    ``.f64`` file per image: the ``N_FEATURES`` values as little-endian float64, then an 8-byte
    BLAKE2b digest of them, so a cut or damaged entry is recomputed. Safe to delete at any time.

    Not ``.npy``: ``np.load`` parses each header with ``ast.literal_eval``, and on CPython 3.11 the
    AST constructor's recursion counter is shared by all threads, so entries read by the loader's
    worker threads at once could fail with "SystemError: AST constructor recursion depth mismatch"
    (cpython gh-106905; it failed a CI run of this project's training test).
    """

    SUFFIX = ".f64"
    _DIGEST_BYTES = 8

    def __init__(self, root: Optional[Path] = None):
        base = Path(os.environ.get("EMCLASSIFY_CACHE", Path.home() / ".cache" / "emclassify"))
        self.root = Path(root) if root else base / f"features-v{FEATURES_VERSION}"

    @staticmethod
    def key(image_sha: str, mask: Optional[np.ndarray]) -> str:
        h = hashlib.sha256(image_sha.encode())
        h.update(b"none" if mask is None else np.packbits(np.asarray(mask) != 0).tobytes())
        h.update(b"" if mask is None else str(np.asarray(mask).shape).encode())
        return h.hexdigest()

    def get_or_compute(self, image_sha: str, image: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
        """The feature vector, shape (N_FEATURES,), float64, of ``image`` in ``mask`` (None: segmented
        automatically), read from the cache when an entry for them is there and whole."""
        key = self.key(image_sha, mask)
        path = self.root / key[:2] / f"{key}{self.SUFFIX}"
        try:
            vec = self._decode(path.read_bytes())
            if vec is not None:
                return vec
        except OSError:  # missing or unreadable: computed again
            pass
        vec = particle_features(image, mask)
        try:
            # a temporary file of its own per writer: threads of one process (a GUI job and the next)
            # once shared one named by the process id, and one could rename the other's half-written file
            write_bytes_atomic(path, self._encode(vec), durable=False)
        except OSError:
            pass  # a read-only cache only costs recomputation
        return vec

    @classmethod
    def _encode(cls, vec: np.ndarray) -> bytes:
        data = np.asarray(vec, dtype="<f8").tobytes()
        return data + hashlib.blake2b(data, digest_size=cls._DIGEST_BYTES).digest()

    @classmethod
    def _decode(cls, raw: bytes) -> Optional[np.ndarray]:
        """The vector in an entry's bytes, or None when they are not a whole entry."""
        n = N_FEATURES * 8
        if len(raw) != n + cls._DIGEST_BYTES:
            return None
        data, digest = raw[:n], raw[n:]
        if hashlib.blake2b(data, digest_size=cls._DIGEST_BYTES).digest() != digest:
            return None
        return np.frombuffer(data, dtype="<f8").astype(np.float64)
