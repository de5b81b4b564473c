"""Synthetic TEM-like liposome images, with masks and known classes.

Used for the bundled demo folder and default model, for tests, and as
"artificial data" for minority classes. Deterministic: image ``i`` of seed
``s`` depends only on ``(s, i)`` and its class, and the class sequence only on
``(s, n, proportions)``.

Image model (per particle, all in float32, vectorised numpy):

- **Geometry**: an elliptical vesicle, outer radius 18–55 px, axis ratio up to
  1.3, random orientation, centred (±3 px) in a crop with a 50 px surrounding.
- **Membranes**: each bilayer is two dark leaflets 3.2 px apart (Gaussian
  profiles, sigma ~0.9 px), i.e. the railroad-track look of cryo-TEM.
  Unilamellar = one bilayer; multilamellar = 2–4 nested bilayers 5–9 px apart.
- **Interior** (encapsulation): full = dense, granular content; empty = interior
  brighter than the background. Lamellarity images get a random moderate
  interior density.
- **Uncertain** (the genuinely ambiguous cases a microscopist would not call):
  a faint or partial extra membrane, membrane gaps, a neighbour vesicle
  overlapping the particle, half-filled or faint content, heavy defocus blur.
- **Micrograph**: images come in groups of 25 ("micrographs", the manifest's
  ``group``) sharing background level, low-frequency texture strength,
  electron dose and blur; neighbour vesicles appear in the surrounding.
- **Imaging**: transmission = background x (1 - darkness), Gaussian blur
  (0.6–1.6 px), shot noise at 30–100 e-/px, scaled to 8 bit.

The mask is the filled outer membrane (255 inside, 0 outside), same size.

**Texture problem** (``texture``): classes told apart only by the *inner texture* of particles
of one shape, written the way public TEM virus-texture sets come: 41x41 px, particle filling the
box, no surround and no masks. Six classes, equal shares: ``fine-grain`` and ``coarse-grain``
(isotropic grain, correlation ~0.7 vs ~2.2 px), ``striated`` (parallel stripes, period 4-6 px, any
orientation), ``concentric`` (rings, period 4-6 px), ``dense-core`` (a dark core of 35-55 % of
the radius) and ``spotted`` (4-9 dark dots). Every class draws its radius (11-17 px), mean
interior density and texture amplitude from the same ranges, so neither size nor mean grey
tells them apart. Imaging as above with half the blur (fine texture must survive it).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ._version import __version__
from .atomic import write_text_atomic

PROBLEMS: Dict[str, Tuple[Tuple[str, ...], Tuple[float, ...]]] = {
    # class names and the seed's class proportions
    "lamellarity": (("unilamellar", "multilamellar", "uncertain"), (0.873, 0.121, 0.006)),
    "encapsulation": (("full", "empty", "uncertain"), (0.973, 0.007, 0.020)),
    # same-shape particles told apart by inner texture only (see the module doc)
    "texture": (("fine-grain", "coarse-grain", "striated", "concentric", "dense-core", "spotted"), (1 / 6,) * 6),
}
TEXTURE_SIDE = 41   # px, the texture problem's image side (no surround, no mask)
PARTICLE_PROBLEMS = ("texture",)   # problems of particle images only: no micrographs, no masks written
SURROUND = 50       # px of surrounding on each side of the particle
GROUP_SIZE = 25     # particles per synthetic micrograph
LEAFLET_GAP = 3.2   # px between the two leaflets of a bilayer


@dataclass(frozen=True)
class Micrograph:
    """Imaging conditions shared by the particles of one synthetic micrograph."""

    background: float   # mean transmitted intensity, 8-bit units
    texture: float      # amplitude of low-frequency background variation (fraction)
    dose: float         # electrons per pixel (shot noise)
    blur: float         # Gaussian blur sigma, px
    contrast: float     # membrane darkness scale
    crowding: float     # probability of a neighbour vesicle in the surrounding


def class_counts(n: int, proportions: Sequence[float]) -> List[int]:
    """Largest-remainder rounding of ``n * proportions`` (sums to ``n``; ties to the earlier class)."""
    p = np.asarray(proportions, dtype=np.float64)
    if n < 0 or p.ndim != 1 or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"invalid n={n} or proportions={list(proportions)}")
    p = p / p.sum()
    raw = n * p
    counts = np.floor(raw).astype(int)
    order = sorted(range(len(p)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def class_sequence(n: int, seed: int, proportions: Sequence[float]) -> np.ndarray:
    """Class index of each of ``n`` images: exact counts, deterministically shuffled."""
    counts = class_counts(n, proportions)
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng([seed, 0x5EED]).shuffle(labels)
    return labels


def micrograph(seed: int, group: int) -> Micrograph:
    rng = np.random.default_rng([seed, 0x6A0, group])
    return Micrograph(
        background=float(rng.uniform(140, 200)),
        texture=float(rng.uniform(0.02, 0.08)),
        dose=float(rng.uniform(30, 100)),
        blur=float(rng.uniform(0.6, 1.6)),
        contrast=float(rng.uniform(0.35, 0.6)),
        crowding=float(rng.uniform(0.1, 0.5)),
    )


def _bilayer(rho: np.ndarray, radius: float, amplitude: float, sigma: float) -> np.ndarray:
    """Darkness of one bilayer centred at ``radius`` (two Gaussian leaflets)."""
    d = rho - radius
    half = LEAFLET_GAP / 2
    k = np.float32(-0.5 / sigma**2)
    return amplitude * (np.exp(k * (d - half) ** 2) + np.exp(k * (d + half) ** 2))


def _elliptic_radius(yy, xx, cy, cx, a, b, theta):
    """Elliptical 'radius' in px: equals ``a``-scaled distance on the ellipse's major axis."""
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = xx - cx, yy - cy
    u = (dx * c + dy * s) / a
    v = (-dx * s + dy * c) / b
    return np.sqrt(u * u + v * v) * np.float32((a + b) / 2), np.arctan2(v, u)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix spreading n_in knots over n_out pixels."""
    pos = np.linspace(0, n_in - 1, n_out, dtype=np.float32)
    return np.maximum(0, 1 - np.abs(pos[:, None] - np.arange(n_in, dtype=np.float32)[None, :]))


def _low_freq_noise(rng, shape, cell: int = 24) -> np.ndarray:
    """Smooth random field (unit-ish amplitude, correlation length ~``cell`` px)."""
    gh, gw = shape[0] // cell + 2, shape[1] // cell + 2
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    return _interp_matrix(shape[0], gh) @ coarse @ _interp_matrix(shape[1], gw).T


def _vesicle(problem: str, cls: str, rng, mic: Micrograph, yy, xx, cy: float, cx: float, radius: float,
             a: float, b: float, theta: float):
    """Darkness (float32, the grid's shape) of one vesicle of class ``cls`` centred at (cy, cx).

    Returns (darkness, elliptic radius per pixel, membrane sigma, membrane amplitude); draws its
    random figures from ``rng`` in a fixed order (the images of a seed never change).
    """
    rho, phi = _elliptic_radius(yy, xx, cy, cx, a, b, theta)

    sigma = rng.uniform(0.75, 1.05)
    amp = mic.contrast * rng.uniform(0.8, 1.2) / 2
    dark = np.zeros(yy.shape, np.float32)

    # --- membranes -------------------------------------------------------------
    n_layers = 1
    faint_layer = None
    if problem == "lamellarity":
        if cls == "multilamellar":
            n_layers = int(rng.integers(2, 5))
        elif cls == "uncertain":
            faint_layer = rng.uniform(0.15, 0.35)  # a ghost of a second bilayer
    spacing = rng.uniform(5, 9)
    n_layers = max(1, min(n_layers, int((radius - 8) // spacing) + 1))
    for k in range(n_layers):
        dark += _bilayer(rho, radius - k * spacing, amp * rng.uniform(0.85, 1.0), sigma)
    if faint_layer is not None:
        dark += _bilayer(rho, radius - spacing, amp * faint_layer, sigma * 1.3)

    # --- interior --------------------------------------------------------------
    inner = radius - (n_layers - 1) * spacing - LEAFLET_GAP
    inside = np.clip((inner - rho) / 1.5, 0, 1)  # soft-edged interior
    grain = ndimage.gaussian_filter(rng.standard_normal(yy.shape, dtype=np.float32), 1.5)
    if problem == "encapsulation":
        if cls == "full":
            density = rng.uniform(0.18, 0.35)
        elif cls == "empty":
            density = -rng.uniform(0.04, 0.10)
        else:
            density = rng.uniform(0.03, 0.10)  # faint content: neither clearly full nor empty
        content = density * (1 + 0.6 * grain)
        if cls == "uncertain" and rng.random() < 0.5:
            # half-filled: content on one side of a random chord
            content = content * (np.cos(phi - rng.uniform(0, 2 * np.pi)) > 0) * 2.5
        dark += inside * content.astype(np.float32)
    else:
        dark += inside * np.float32(rng.uniform(0.0, 0.15)) * (1 + 0.5 * grain)

    # --- genuinely ambiguous cases ---------------------------------------------
    if cls == "uncertain":
        what = rng.integers(0, 3)
        if what == 0:  # membrane gaps: partial rings
            gaps = np.cos(3 * (phi - rng.uniform(0, 2 * np.pi))) > rng.uniform(0.3, 0.7)
            dark *= np.where(gaps & (rho > inner), np.float32(0.25), np.float32(1.0))
        elif what == 1:  # an overlapping neighbour vesicle crossing the particle
            ang = rng.uniform(0, 2 * np.pi)
            r2 = radius * rng.uniform(0.6, 1.0)
            oy, ox = cy + np.sin(ang) * radius * 0.9, cx + np.cos(ang) * radius * 0.9
            rho2 = np.sqrt((yy - oy) ** 2 + (xx - ox) ** 2)
            dark += _bilayer(rho2, r2, amp, sigma)
            if problem == "lamellarity":
                dark += _bilayer(rho2, r2 - spacing, amp * 0.8, sigma)
        # what == 2: heavy defocus, applied below
    return dark, rho, sigma, amp


def _imaging(dark: np.ndarray, texture: np.ndarray, blur: float, mic: Micrograph, rng) -> np.ndarray:
    """Darkness -> 8-bit image: transmission over a textured background, blur, shot noise."""
    transmitted = mic.background * texture * np.clip(1 - dark, 0.02, None)
    transmitted = ndimage.gaussian_filter(transmitted, blur)
    # Shot noise: Poisson(dose) in its Gaussian form (dose >= 15 e-/px), much cheaper to draw.
    electrons = np.maximum(transmitted, 0) * np.float32(mic.dose / mic.background)
    electrons += np.sqrt(electrons) * rng.standard_normal(electrons.shape, dtype=np.float32)
    return np.clip(np.rint(electrons * np.float32(mic.background / mic.dose)), 0, 255).astype(np.uint8)


def render(problem: str, cls: str, seed: int, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render particle ``index`` of class ``cls``: (image uint8 HxW, mask uint8 HxW with 0/255)."""
    classes, _ = PROBLEMS[problem]
    if cls not in classes:
        raise ValueError(f"class {cls!r} is not one of {problem}'s classes {classes}")
    mic = micrograph(seed, index // GROUP_SIZE)
    rng = np.random.default_rng([seed, index])
    if problem == "texture":
        return _render_texture(cls, mic, rng)

    radius = rng.uniform(18, 55)
    ratio = rng.uniform(1.0, 1.3)
    a, b = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
    theta = rng.uniform(0, np.pi)
    extent = int(np.ceil(max(a, b) + 3))
    side_h = 2 * (extent + SURROUND) + int(rng.integers(0, 7))
    side_w = 2 * (extent + SURROUND) + int(rng.integers(0, 7))
    cy = side_h / 2 + rng.uniform(-3, 3)
    cx = side_w / 2 + rng.uniform(-3, 3)
    yy, xx = np.mgrid[0:side_h, 0:side_w].astype(np.float32)
    dark, rho, sigma, amp = _vesicle(problem, cls, rng, mic, yy, xx, cy, cx, radius, a, b, theta)
    # --- neighbours in the surrounding (outside the mask) ----------------------
    if rng.random() < mic.crowding:
        ang = rng.uniform(0, 2 * np.pi)
        r3 = rng.uniform(15, 45)
        dist = max(a, b) + r3 + rng.uniform(8, 30)
        oy, ox = cy + np.sin(ang) * dist, cx + np.cos(ang) * dist
        rho3 = np.sqrt((yy - oy) ** 2 + (xx - ox) ** 2)
        dark += _bilayer(rho3, r3, amp, sigma)

    texture = 1 + mic.texture * _low_freq_noise(rng, (side_h, side_w))
    blur = mic.blur * (rng.uniform(2.0, 3.0) if cls == "uncertain" and rng.random() < 0.35 else 1.0)
    image = _imaging(dark, texture, blur, mic, rng)
    mask = np.where(rho <= radius + LEAFLET_GAP / 2 + 2 * sigma, np.uint8(255), np.uint8(0))
    return image, mask


def _texture(cls: str, rng, yy, xx, cy: float, cx: float, radius: float) -> np.ndarray:
    """Zero-mean-ish inner pattern of class ``cls`` (float32, unit amplitude) on the grid."""
    rho = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    if cls in ("fine-grain", "coarse-grain"):
        sigma = rng.uniform(0.6, 0.8) if cls == "fine-grain" else rng.uniform(1.9, 2.5)
        grain = ndimage.gaussian_filter(rng.standard_normal(yy.shape, dtype=np.float32), sigma)
        return grain / max(float(grain.std()), 1e-6)
    if cls == "striated":
        period, angle = rng.uniform(4, 6), rng.uniform(0, np.pi)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        return np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi)).astype(np.float32) * 1.4
    if cls == "concentric":
        period = rng.uniform(4, 6)
        return np.sin(2 * np.pi * rho / period + rng.uniform(0, 2 * np.pi)).astype(np.float32) * 1.4
    if cls == "dense-core":
        core = radius * rng.uniform(0.35, 0.55)
        return (2.0 * np.clip((core - rho) / 1.5, 0, 1) - 0.4).astype(np.float32)
    # spotted: a few dark dots inside the particle
    out = np.full(yy.shape, -0.3, np.float32)
    for _ in range(int(rng.integers(4, 10))):
        r, ang = radius * 0.75 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        sy, sx = cy + r * np.sin(ang), cx + r * np.cos(ang)
        out += 2.5 * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / np.float32(2 * rng.uniform(0.9, 1.4) ** 2))
    return out


def _render_texture(cls: str, mic: Micrograph, rng) -> Tuple[np.ndarray, np.ndarray]:
    """One ``texture`` particle: (image uint8 41x41, mask uint8 0/255) -- see the module doc."""
    side = TEXTURE_SIDE
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    radius = rng.uniform(11, 17)
    cy, cx = side / 2 + rng.uniform(-2, 2), side / 2 + rng.uniform(-2, 2)
    rho = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    sigma = rng.uniform(0.75, 1.05)
    amp = mic.contrast * rng.uniform(0.8, 1.2) / 2
    dark = _bilayer(rho, radius, amp, sigma)
    inside = np.clip((radius - LEAFLET_GAP - rho) / 1.5, 0, 1)
    density, strength = rng.uniform(0.10, 0.22), rng.uniform(0.05, 0.09)
    dark += inside * (density + strength * _texture(cls, rng, yy, xx, cy, cx, radius))
    texture = 1 + mic.texture * _low_freq_noise(rng, (side, side), cell=16)
    image = _imaging(dark, texture, mic.blur * 0.5, mic, rng)
    mask = np.where(rho <= radius + LEAFLET_GAP / 2 + 2 * sigma, np.uint8(255), np.uint8(0))
    return image, mask


MICROGRAPH_SIDE = 1024   # px, default side of a synthetic micrograph
TOUCHING = 0.3           # share of particles placed against an earlier one (their masks 0-2 px apart)


@dataclass
class SynthMicrograph:
    """A synthetic field of several particles with its ground truth.

    image: uint8 (H, W); labels: uint16 (H, W), 0 background, k the pixels of particle k;
    particles: one dict per particle (``particle`` = k, ``label``, ``cx``, ``cy``, ``touching``).
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    particles: List[Dict]


def _refuse_particle_only(problem: str) -> None:
    if problem in PARTICLE_PROBLEMS:
        raise ValueError(f"the {problem} problem makes particle images only, not micrographs")


def render_micrograph(problem: str, seed: int, index: int, side: int = MICROGRAPH_SIDE, n: int = 24,
                      proportions: Optional[Sequence[float]] = None) -> SynthMicrograph:
    """Render micrograph ``index``: ``n`` vesicles (fewer if the field is full) at random places, about
    :data:`TOUCHING` of them against an earlier one, imaged like :func:`render`'s particles (no
    overlaps: every pixel belongs to at most one particle, so the labels are exact)."""
    _refuse_particle_only(problem)
    props = resolve_proportions(problem, proportions)
    classes = PROBLEMS[problem][0]
    mic = micrograph(seed, 10_000 + index)
    rng = np.random.default_rng([seed, 0x3A1C, index])
    dark = np.zeros((side, side), np.float32)
    labels = np.zeros((side, side), np.uint16)
    placed: List[Tuple[float, float, float]] = []  # cy, cx, bounding radius
    particles: List[Dict] = []
    for _ in range(n):
        cls = classes[int(rng.choice(len(classes), p=props))]
        radius = rng.uniform(18, 55)
        ratio = rng.uniform(1.0, 1.15)
        a, b = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
        theta = rng.uniform(0, np.pi)
        bound = max(a, b) * (radius + 6) / ((a + b) / 2) + 1  # encloses the mask
        touching = bool(placed) and rng.random() < TOUCHING
        for _attempt in range(60):
            if touching:
                oy, ox, orad = placed[int(rng.integers(len(placed)))]
                ang = rng.uniform(0, 2 * np.pi)
                dist = orad + bound + rng.uniform(0, 2)
                cy, cx = oy + np.sin(ang) * dist, ox + np.cos(ang) * dist
            else:
                cy, cx = rng.uniform(bound, side - bound), rng.uniform(bound, side - bound)
            inside = bound <= cy <= side - bound and bound <= cx <= side - bound
            if inside and all(np.hypot(cy - py, cx - px) >= pr + bound for py, px, pr in placed):
                break
        else:
            continue  # no room left for this one
        pad = int(np.ceil(bound)) + 12  # membranes' blur reaches past the mask
        y0, y1 = max(0, int(cy) - pad), min(side, int(cy) + pad + 1)
        x0, x1 = max(0, int(cx) - pad), min(side, int(cx) + pad + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d, rho, sigma, _amp = _vesicle(problem, cls, rng, mic, yy, xx, cy, cx, radius, a, b, theta)
        dark[y0:y1, x0:x1] += d
        k = len(particles) + 1
        mask = (rho <= radius + LEAFLET_GAP / 2 + 2 * sigma) & (labels[y0:y1, x0:x1] == 0)
        labels[y0:y1, x0:x1][mask] = k
        placed.append((cy, cx, bound))
        particles.append({"particle": k, "label": cls, "cx": round(float(cx), 2), "cy": round(float(cy), 2),
                          "touching": touching})
    texture = 1 + mic.texture * _low_freq_noise(rng, (side, side), cell=96)
    image = _imaging(dark, texture, mic.blur, mic, rng)
    return SynthMicrograph(f"synth{seed}-field{index:04d}", image, labels, particles)


def generate_micrographs(out: Path, problem: str, n: int, seed: int = 0, side: int = MICROGRAPH_SIDE,
                         per_micrograph: int = 24, proportions: Optional[Sequence[float]] = None,
                         progress=None) -> Dict:
    """Write ``n`` synthetic micrographs in the layout of NanoShapes micrographs; return the provenance.

    ``OUT/images/<name>.tif`` (8 bit), ``OUT/instances/<name>.tif`` (uint16 instance labels),
    ``OUT/particles.csv`` (``micrograph,particle,label,x0,y0,x1,y1,cx,cy,area_px``),
    ``OUT/classes.txt`` and ``OUT/synth.json``.
    """
    _refuse_particle_only(problem)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "instances").mkdir(parents=True, exist_ok=True)
    classes = PROBLEMS[problem][0]
    props = resolve_proportions(problem, proportions)
    rows = []
    for i in range(n):
        m = render_micrograph(problem, seed, i, side, per_micrograph, props)
        (out / "images" / f"{m.name}.tif").write_bytes(_tiff_bytes(m.image, compress=False))
        (out / "instances" / f"{m.name}.tif").write_bytes(_tiff_bytes(m.labels, compress=True))
        boxes = ndimage.find_objects(m.labels.astype(np.int32))
        for p in m.particles:
            sl = boxes[p["particle"] - 1]
            area = int((m.labels[sl] == p["particle"]).sum())
            rows.append((f"images/{m.name}.tif", p["particle"], p["label"], sl[1].start, sl[0].start, sl[1].stop,
                         sl[0].stop, p["cx"], p["cy"], area))
        if progress:
            progress(i + 1, n)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["micrograph", "particle", "label", "x0", "y0", "x1", "y1", "cx", "cy", "area_px"])
    writer.writerows(rows)
    write_text_atomic(out / "particles.csv", text.getvalue())
    write_text_atomic(out / "classes.txt", "".join(f"{c}\n" for c in classes))
    provenance = {"generator": "emclassify.synth (micrographs)", "emclassify": __version__, "problem": problem,
                  "micrographs": n, "seed": seed, "side_px": side, "per_micrograph": per_micrograph,
                  "classes": list(classes), "proportions": list(props), "particles": len(rows),
                  "touching_share": TOUCHING}
    write_text_atomic(out / "synth.json", json.dumps(provenance, indent=2) + "\n")
    return provenance


@dataclass(frozen=True)
class SynthItem:
    """One generated particle (in memory)."""

    index: int
    label: str
    group: str
    image: np.ndarray  # uint8 (H, W)
    mask: np.ndarray   # uint8 (H, W), 0 / 255

    @property
    def name(self) -> str:
        return f"{self.group}_{self.index:06d}"


def resolve_proportions(problem: str, proportions: Optional[Sequence[float]]) -> Tuple[float, ...]:
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}; choose one of {', '.join(PROBLEMS)}")
    classes, default = PROBLEMS[problem]
    if proportions is None:
        return default
    if len(proportions) != len(classes) or any(p < 0 for p in proportions) or sum(proportions) <= 0:
        raise ValueError(
            f"{problem} needs {len(classes)} non-negative proportions ({', '.join(classes)}), got {list(proportions)}"
        )
    total = float(sum(proportions))
    return tuple(float(p) / total for p in proportions)


def iter_particles(
    problem: str, n: int, seed: int = 0, proportions: Optional[Sequence[float]] = None, start: int = 0
) -> Iterator[SynthItem]:
    """Generate ``n`` particles in memory (same images as :func:`generate` writes)."""
    props = resolve_proportions(problem, proportions)
    classes = PROBLEMS[problem][0]
    labels = class_sequence(n, seed, props)
    for i in range(n):
        idx = start + i
        cls = classes[labels[i]]
        image, mask = render(problem, cls, seed, idx)
        yield SynthItem(idx, cls, f"synth{seed}-m{idx // GROUP_SIZE:04d}", image, mask)


def _tiff_bytes(arr: np.ndarray, compress: bool) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", compression="zlib" if compress else None)
    return buf.getvalue()


def generate(
    out: Path,
    problem: str,
    n: int,
    seed: int = 0,
    proportions: Optional[Sequence[float]] = None,
    progress=None,
) -> Dict:
    """Write ``n`` synthetic particles in the NanoShapes layout; return the provenance dict.

    ``OUT/images/<class>/<name>.tif``, ``OUT/masks/<class>/<name>.tif`` (zlib-compressed),
    ``OUT/manifest.csv`` (``path,mask,label,group``), ``OUT/classes.txt`` (the problem's class
    order, e.g. unilamellar, multilamellar, uncertain) and ``OUT/synth.json`` (how they were made). ``progress(done, total)`` is called after each image if given.
    Problems in :data:`PARTICLE_PROBLEMS` (``texture``) come without masks: no ``masks/`` and no
    ``mask`` column, as such public sets come.
    """
    out = Path(out)
    props = resolve_proportions(problem, proportions)
    classes = PROBLEMS[problem][0]
    with_masks = problem not in PARTICLE_PROBLEMS
    for c in classes:
        (out / "images" / c).mkdir(parents=True, exist_ok=True)
        if with_masks:
            (out / "masks" / c).mkdir(parents=True, exist_ok=True)
    rows = []
    for done, item in enumerate(iter_particles(problem, n, seed, props), start=1):
        rel_img = f"images/{item.label}/{item.name}.tif"
        (out / rel_img).write_bytes(_tiff_bytes(item.image, compress=False))  # noise: zlib gains ~nothing
        if with_masks:
            rel_mask = f"masks/{item.label}/{item.name}.tif"
            (out / rel_mask).write_bytes(_tiff_bytes(item.mask, compress=True))
            rows.append((rel_img, rel_mask, item.label, item.group))
        else:
            rows.append((rel_img, item.label, item.group))
        if progress:
            progress(done, n)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "mask", "label", "group"] if with_masks else ["path", "label", "group"])
    writer.writerows(rows)
    write_text_atomic(out / "manifest.csv", text.getvalue())
    write_text_atomic(out / "classes.txt", "".join(f"{c}\n" for c in classes))  # the problem's class order
    provenance = {
        "generator": "emclassify.synth",
        "emclassify": __version__,
        "problem": problem,
        "n": n,
        "seed": seed,
        "classes": list(classes),
        "proportions": list(props),
        "counts": dict(zip(classes, class_counts(n, props))),
        "surround_px": 0 if problem in PARTICLE_PROBLEMS else SURROUND,
        "masks": with_masks,
        "group_size": GROUP_SIZE,
    }
    write_text_atomic(out / "synth.json", json.dumps(provenance, indent=2) + "\n")
    return provenance


__all__ = [
    "GROUP_SIZE",
    "MICROGRAPH_SIDE",
    "SynthMicrograph",
    "generate_micrographs",
    "render_micrograph",
    "PROBLEMS",
    "PARTICLE_PROBLEMS",
    "SURROUND",
    "TEXTURE_SIDE",
    "SynthItem",
    "class_counts",
    "class_sequence",
    "generate",
    "iter_particles",
    "render",
    "resolve_proportions",
]
