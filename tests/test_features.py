"""Handcrafted features on analytic shapes, and the pickle-free SVM against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
import torch

from emclassify.features import FEATURE_NAMES, N_FEATURES, FeatureCache, lbp_histogram, particle_features

H = W = 201
YY, XX = np.mgrid[0:H, 0:W]


def feats(img, mask):
    return dict(zip(FEATURE_NAMES, particle_features(img, mask)))


def test_disc():
    r = 50
    disc = (YY - 100) ** 2 + (XX - 100) ** 2 <= r * r
    f = feats(np.where(disc, 80.0, 180.0), disc)
    assert f["area"] == pytest.approx(np.pi * r * r, rel=0.01)
    assert f["perimeter"] == pytest.approx(2 * np.pi * r, rel=0.02)
    assert f["circularity"] == pytest.approx(1.0, abs=0.03)
    assert f["eccentricity"] == pytest.approx(0.0, abs=0.02)
    assert f["equivalent_diameter"] == pytest.approx(2 * r, rel=0.01)
    assert f["hu1"] == pytest.approx(-np.log10(1 / (2 * np.pi)), abs=0.005)  # Hu1 of a disc = 1 / (2 pi)
    assert f["solidity"] > 0.97
    # uniform dark disc on a flat background: relative intensity inside = (80 - 180) / bg_std (bg_std -> 1)
    assert f["int_mean"] == pytest.approx(-100.0) and f["int_std"] == pytest.approx(0.0)


def test_ellipse():
    a, b = 80, 40
    ell = ((YY - 100) / b) ** 2 + ((XX - 100) / a) ** 2 <= 1
    f = feats(np.where(ell, 80.0, 180.0), ell)
    assert f["area"] == pytest.approx(np.pi * a * b, rel=0.01)
    assert f["eccentricity"] == pytest.approx(np.sqrt(1 - (b / a) ** 2), abs=0.01)
    assert f["major_axis"] == pytest.approx(2 * a, rel=0.01) and f["minor_axis"] == pytest.approx(2 * b, rel=0.01)
    assert f["circularity"] < 0.92


def test_ring_radial_profile_peaks_at_the_membrane():
    """A dark annulus (a vesicle membrane) at 0.9 R: the radial profile is darkest in the ring's bins."""
    r = 60
    dist = np.sqrt((YY - 100) ** 2 + (XX - 100) ** 2)
    disc = dist <= r
    img = np.where(np.abs(dist - 0.9 * r) < 3, 60.0, 180.0) + np.random.default_rng(0).normal(0, 2, (H, W))
    f = feats(img, disc)
    radial = np.array([f[f"radial{i:02d}"] for i in range(16)])
    edge = np.array([f[f"edge{i:02d}"] for i in range(16)])
    # bins span 0..1.5 R: the ring at 0.9 R falls in bin floor(0.9 / 1.5 * 16) = 9
    assert int(np.argmin(radial)) == 9
    assert int(np.argmax(edge)) in (8, 9, 10)
    assert radial[:6].mean() == pytest.approx(0.0, abs=0.5)  # interior looks like background


def test_lbp_of_flat_and_checkerboard():
    flat = np.ones((10, 10))
    assert lbp_histogram(flat, np.ones_like(flat, bool))[8] == 1.0  # all neighbours >= centre: code 255 -> 8
    checker = (np.indices((10, 10)).sum(0) % 2).astype(float)
    h = lbp_histogram(checker, np.ones_like(checker, bool))
    # centre 1: diagonal neighbours 1, edge neighbours 0 -> 8 transitions, non-uniform (bin 9);
    # centre 0: every neighbour >= 0 -> code 255 (bin 8). Half the pixels each.
    assert h.sum() == pytest.approx(1.0)
    assert h[9] == pytest.approx(0.5, abs=0.1) and h[8] == pytest.approx(0.5, abs=0.1)


def test_no_mask_uses_segmentation_and_cache(tmp_path):
    disc = (YY - 100) ** 2 + (XX - 100) ** 2 <= 40**2
    img = np.where(disc, 60.0, 180.0) + np.random.default_rng(1).normal(0, 3, (H, W))
    f = feats(img, None)
    assert f["area"] == pytest.approx(np.pi * 40**2, rel=0.08)
    cache = FeatureCache(tmp_path)
    v1 = cache.get_or_compute("abc", img, disc)
    assert len(list(tmp_path.rglob("*" + FeatureCache.SUFFIX))) == 1
    np.testing.assert_array_equal(cache.get_or_compute("abc", img * 0, disc), v1)  # served from the cache
    assert v1.shape == (N_FEATURES,)


def test_a_damaged_cache_entry_is_computed_again_and_writers_never_collide(tmp_path):
    """An empty, cut or altered entry (a crash, a full disk, a bad sector) is recomputed, not an
    error; threads of one process writing the same entry each use their own temporary file, so no
    reader sees half of one."""
    from concurrent.futures import ThreadPoolExecutor

    disc = (YY - 100) ** 2 + (XX - 100) ** 2 <= 40**2
    img = np.where(disc, 60.0, 180.0)
    cache = FeatureCache(tmp_path)
    want = particle_features(img, disc)
    cache.get_or_compute("abc", img, disc)
    [entry] = list(tmp_path.rglob("*"  + FeatureCache.SUFFIX))
    whole = entry.read_bytes()
    flipped = bytearray(whole)
    flipped[3] ^= 0xFF   # the first value changed, the length kept
    for damaged in (b"", whole[:90], bytes(flipped)):
        entry.write_bytes(damaged)
        np.testing.assert_array_equal(cache.get_or_compute("abc", img * 0 + 1, disc), particle_features(img * 0 + 1, disc))
        np.testing.assert_array_equal(cache.get_or_compute("abc", img, disc), particle_features(img * 0 + 1, disc))
        entry.write_bytes(whole)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: FeatureCache(tmp_path / "t").get_or_compute("same", img, disc), range(32)))
    assert all(np.array_equal(g, want) for g in got)
    left = [p for p in (tmp_path / "t").rglob("*") if p.is_file()]
    assert len(left) == 1 and left[0].suffix == FeatureCache.SUFFIX   # one entry, no temporary file left behind


def test_cache_entries_read_by_many_threads_while_the_garbage_collector_runs_finalizers(tmp_path):
    """The training loader reads cached features from worker threads. On CPython 3.11 a thread
    switch inside the AST constructor (a garbage collection running a finaliser is one) corrupted
    its shared recursion counter, so ``np.load``'s header parse could raise SystemError; a CI run
    failed so. Provoked here on purpose: cycles with finalisers, a low GC threshold, and a
    microsecond switch interval (the old ``.npy`` cache failed within the first round)."""
    import gc
    import sys
    from concurrent.futures import ThreadPoolExecutor

    disc = (YY - 100) ** 2 + (XX - 100) ** 2 <= 40**2
    img = np.where(disc, 60.0, 180.0)
    cache = FeatureCache(tmp_path)
    want = cache.get_or_compute("abc", img, disc)

    class Finalised:
        def __del__(self):
            sum(range(200))   # Python code run by the collector: a point where threads switch

    def read(_):
        for _ in range(20):
            a, b = Finalised(), Finalised()
            a.other, b.other = b, a   # a cycle: freed by the collector at an arbitrary allocation
        return cache.get_or_compute("abc", img * 0, disc)

    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(20)
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(read, range(2000)))
    finally:
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)
    assert all(np.array_equal(g, want) for g in got)   # every one served from the cache, none raised


@pytest.mark.parametrize("k", [2, 3, 4])
def test_svm_decision_matches_sklearn(k):
    from sklearn.datasets import make_classification
    from sklearn.svm import SVC

    from emclassify.models.svm import SVMModel

    x, y = make_classification(240, 8, n_informative=5, n_classes=k, random_state=k)
    ref = SVC(C=2.0, gamma=0.1, class_weight="balanced", decision_function_shape="ovo").fit(x, y)
    ours = SVMModel(np.zeros(8), np.ones(8), ref.support_vectors_, ref.dual_coef_, ref.intercept_, ref.n_support_,
                    ref._gamma, np.zeros((k, k * (k - 1) // 2)), np.zeros(k))
    np.testing.assert_allclose(ours.decision_ovo(torch.tensor(x)).numpy(),
                               ref.decision_function(x).reshape(len(x), -1), atol=1e-9)


def test_fit_svm_with_a_class_absent_from_training():
    from emclassify.models import fit_svm

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 5)), rng.normal(3, 1, (40, 5))])
    y = np.array([0] * 40 + [2] * 40)  # class 1 of 3 absent
    model, info = fit_svm(x, y, n_classes=3)
    p = model(torch.tensor(x)).exp().numpy()
    assert p.shape == (80, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert p[:, 1].max() < 1e-6 and (p.argmax(1) == y).mean() > 0.95


# ---- scikit-image ports: the same values as FEATURES_VERSION 1's own code --------------------------
# The functions below are the hand-written code these features were computed with before the port
# (kept here as the oracle): a model trained on version-1 features must see the same numbers.

def _v1_eta(weights):
    ys, xs = np.mgrid[0:weights.shape[0], 0:weights.shape[1]].astype(np.float64)
    m00 = weights.sum()
    cy, cx = (weights * ys).sum() / m00, (weights * xs).sum() / m00
    dy, dx = ys - cy, xs - cx
    return {(p, q): float((weights * dx ** p * dy ** q).sum()) / m00 ** (1 + (p + q) / 2)
            for p in range(4) for q in range(4) if 2 <= p + q <= 3}


def _v1_hu(e):
    n20, n02, n11, n30, n03, n21, n12 = (e[(2, 0)], e[(0, 2)], e[(1, 1)], e[(3, 0)], e[(0, 3)], e[(2, 1)],
                                         e[(1, 2)])
    a, b = n30 + n12, n21 + n03
    h = np.array([n20 + n02, (n20 - n02) ** 2 + 4 * n11 ** 2, (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
                  a ** 2 + b ** 2,
                  (n30 - 3 * n12) * a * (a ** 2 - 3 * b ** 2) + (3 * n21 - n03) * b * (3 * a ** 2 - b ** 2),
                  (n20 - n02) * (a ** 2 - b ** 2) + 4 * n11 * a * b,
                  (3 * n21 - n03) * a * (a ** 2 - 3 * b ** 2) - (n30 - 3 * n12) * b * (3 * a ** 2 - b ** 2)])
    return -np.sign(h) * np.log10(np.abs(h) + 1e-30)


def _parity_particles():
    """Synthetic liposomes (asymmetric ones included), and NanoShapes crops when the data is present."""
    from emclassify import synth
    out = [(it.image, it.mask) for it in synth.iter_particles("lamellarity", 40, seed=11)]
    rng = np.random.default_rng(0)
    blob = np.zeros((60, 80), bool)
    blob[10:30, 5:60] = True
    blob[25:55, 40:50] = True  # an L: non-zero odd moments, so the sign of Hu 7 is exercised
    out.append((np.where(blob, 60.0, 200.0) + rng.normal(0, 5, blob.shape), blob))
    from conftest import NANOSHAPES
    if (NANOSHAPES / "manifest.csv").is_file():
        from emclassify.io import load_dataset, read_image, read_mask
        ds = load_dataset(NANOSHAPES)
        for s in ds.samples[::40]:
            img = read_image(s.path).array
            out.append((img, read_mask(s.mask, img.shape)))
    return out


def test_scikit_image_ports_give_version_1_values():
    """Moments and Hu invariants now come from scikit-image (1.85x faster features: 19.5 vs 36.0 ms per
    195 px particle, 1 thread, Intel VM); their values must be version 1's, so FEATURES_VERSION stays 1."""
    from emclassify.segment import auto_mask, otsu_threshold

    idx = {n: i for i, n in enumerate(FEATURE_NAMES)}
    hu_cols = [idx[f"hu{i}"] for i in range(1, 8)]
    eta_cols = [idx[n] for n in ("eta20", "eta11", "eta02", "eta30", "eta21", "eta12", "eta03")]
    for img, mask in _parity_particles():
        img = np.asarray(img, np.float64)
        from skimage.filters import threshold_otsu
        # the hand-written threshold (kept: faster) is scikit-image's
        assert otsu_threshold(img.ravel()) == pytest.approx(float(threshold_otsu(img.ravel(), nbins=256)),
                                                            rel=1e-12, abs=1e-12)
        m = np.asarray(mask) != 0
        vec = particle_features(img, m)
        np.testing.assert_allclose(vec[hu_cols], _v1_hu(_v1_eta(m.astype(np.float64))), rtol=1e-9, atol=1e-9)
        outside = img[~m]
        rel = (img - outside.mean()) / (outside.std() or 1.0)
        darkness = np.where(m, np.clip(-rel, 0, None), 0.0)
        if darkness.sum() > 0:
            e = _v1_eta(darkness)
            np.testing.assert_allclose(vec[eta_cols], [e[k] for k in ((2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2),
                                                                     (0, 3))], rtol=1e-9, atol=1e-12)
        auto_mask(img)  # runs on the ported threshold (its decisions are covered by test_preprocess)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.floats(0.02, 0.95), st.integers(0, 2**32 - 1))
def test_solidity_from_row_ends_equals_the_hull_of_every_pixel(h, w, density, seed):
    """The hull of each row's first and last pixel is the hull of all pixels (the fast path's claim)."""
    from scipy.spatial import ConvexHull, QhullError

    from emclassify.features import _solidity

    mask = np.random.default_rng(seed).random((h, w)) < density
    area = float(mask.sum())
    ys, xs = np.nonzero(mask)
    expected = 1.0
    if len(ys) >= 3:
        corners = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (0, 1) for dx in (0, 1)])
        try:
            volume = ConvexHull(corners).volume
            expected = min(1.0, area / volume) if volume > 0 else 1.0
        except QhullError:
            pass
    assert _solidity(mask, area) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def _whole_image_rings_lbp_intensity(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Radial and edge profiles, intensity statistics and the LBP histogram as FEATURES_VERSION 1
    defines them, computed on the whole image (the oracle for the cropped computation)."""
    from scipy import ndimage

    from emclassify.features import N_RADIAL, _riu2_table

    outside = img[~m] if (~m).any() else img.ravel()
    rel = (img - outside.mean()) / (outside.std() or 1.0)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    area = float(m.sum())
    cy, cx = (yy * m).sum() / area, (xx * m).sum() / area
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (1.5 * max(np.sqrt(area / np.pi), 1.0))
    ring = np.minimum((r * N_RADIAL).astype(np.int64), N_RADIAL)
    smooth = ndimage.gaussian_filter(rel, 1.0)
    grad = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    profiles = []
    for values in (rel, grad):
        sums = np.bincount(ring.ravel(), weights=values.ravel(), minlength=N_RADIAL + 1)[:N_RADIAL]
        counts = np.bincount(ring.ravel(), minlength=N_RADIAL + 1)[:N_RADIAL]
        profiles.append(np.where(counts > 0, sums / np.maximum(counts, 1), 0.0))
    inside = rel[m]
    mean, std = inside.mean(), inside.std()
    z = (inside - mean) / std if std > 0 else np.zeros_like(inside)
    intensity = [mean, std, (z**3).mean(), (z**4).mean() - 3, *np.percentile(inside, [10, 50, 90])]
    p = np.pad(img, 1, mode="edge")
    code = np.zeros(img.shape, np.int64)
    for bit, (dy, dx) in enumerate([(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]):
        code |= (p[1 + dy : 1 + dy + img.shape[0], 1 + dx : 1 + dx + img.shape[1]] >= img).astype(np.int64) << bit
    lbp = np.bincount(_riu2_table()[code[m]], minlength=10) / m.sum()
    return np.concatenate([*profiles, intensity, lbp])


@settings(max_examples=150, deadline=None)
@given(st.integers(3, 70), st.integers(3, 70), st.integers(0, 2**32 - 1), st.sampled_from(["blob", "edge", "pixel", "all"]))
def test_features_from_crops_equal_the_whole_image_computation(h, w, seed, kind):
    """The features read only the mask's box and the rings' reach (plus the gradient's context); the
    values must be those of the whole image, also where the mask or the rings touch the image's edge."""
    from emclassify.features import N_RADIAL, _moments

    rng = np.random.default_rng(seed)
    img = rng.normal(100, 20, (h, w)).round(1)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "pixel":
        m = np.zeros((h, w), bool)
        m[rng.integers(h), rng.integers(w)] = True
    elif kind == "all":
        m = np.ones((h, w), bool)
    else:  # a disc, somewhere inside or (edge) centred on the border
        cy = rng.uniform(0, h) if kind == "blob" else rng.choice([0, h - 1])
        m = (yy - cy) ** 2 + (xx - rng.uniform(0, w)) ** 2 <= rng.uniform(1, max(h, w) / 2) ** 2
        if not m.any():
            m[0, 0] = True
    img = np.where(m, img - 40, img)
    vec = feats(img, m)
    names = ([f"radial{i:02d}" for i in range(N_RADIAL)] + [f"edge{i:02d}" for i in range(N_RADIAL)]
             + ["int_mean", "int_std", "int_skew", "int_kurt", "int_p10", "int_p50", "int_p90"]
             + [f"lbp{i}" for i in range(10)])
    np.testing.assert_allclose([vec[n] for n in names], _whole_image_rings_lbp_intensity(img, m),
                               rtol=1e-9, atol=1e-9)
    # moments of a crop, placed by its origin, are the whole image's
    ys, xs = np.nonzero(m)
    y0, x0 = int(ys.min()), int(xs.min())
    crop = m[y0 : ys.max() + 1, x0 : xs.max() + 1].astype(np.float64)
    whole, part = _moments(m.astype(np.float64)), _moments(crop, origin=(y0, x0))
    assert part[0] == whole[0] and part[1] == whole[1]  # mass and centroid exactly (whole-number sums)
    np.testing.assert_allclose(part[3], whole[3], rtol=1e-9, atol=1e-12)
