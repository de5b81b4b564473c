"""The synthetic liposome generator: layout, determinism, class proportions, masks."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from emclassify import synth
from emclassify.io import load_dataset, read_image


def test_class_counts_largest_remainder():
    assert synth.class_counts(1000, synth.PROBLEMS["lamellarity"][1]) == [873, 121, 6]
    assert synth.class_counts(1000, synth.PROBLEMS["encapsulation"][1]) == [973, 7, 20]
    assert synth.class_counts(10, (1, 1, 1)) == [4, 3, 3]
    assert sum(synth.class_counts(997, (0.2, 0.3, 0.5))) == 997


def test_default_proportions_are_the_seed_papers():
    seq = synth.class_sequence(2000, seed=3, proportions=synth.PROBLEMS["lamellarity"][1])
    assert np.bincount(seq).tolist() == [1746, 242, 12]


def test_layout_loads_as_dataset_with_masks_and_groups(tmp_path):
    prov = synth.generate(tmp_path, "encapsulation", 60, seed=4, proportions=(0.5, 0.3, 0.2))
    assert prov["counts"] == {"full": 30, "empty": 18, "uncertain": 12}
    with open(tmp_path / "manifest.csv") as fh:
        assert next(csv.reader(fh)) == ["path", "mask", "label", "group"]
    ds = load_dataset(tmp_path)
    # classes.txt declares the problem's own order (full, empty, uncertain), not the alphabet's
    assert ds.classes == ["full", "empty", "uncertain"] and len(ds) == 60
    assert ds.class_order == "declared in classes.txt"
    assert ds.class_counts() == {"full": 30, "empty": 18, "uncertain": 12}
    assert len(set(ds.groups)) == 60 // synth.GROUP_SIZE + 1
    for s in ds.samples[:10]:
        img, mask = read_image(s.path).array, read_image(s.mask).array
        assert img.dtype == np.uint8 and img.shape == mask.shape
        assert set(np.unique(mask)) == {0, 255}
        ys, xs = np.nonzero(mask)
        # the particle has (about) 50 px of surrounding on every side
        assert ys.min() >= synth.SURROUND - 5 and xs.min() >= synth.SURROUND - 5
        assert img.shape[0] - ys.max() >= synth.SURROUND - 5 and img.shape[1] - xs.max() >= synth.SURROUND - 5


def test_deterministic_for_a_seed(tmp_path):
    a = list(synth.iter_particles("lamellarity", 8, seed=11))
    b = list(synth.iter_particles("lamellarity", 8, seed=11))
    c = list(synth.iter_particles("lamellarity", 8, seed=12))
    assert [x.label for x in a] == [x.label for x in b]
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert any(x.image.shape != y.image.shape or not np.array_equal(x.image, y.image) for x, y in zip(a, c))
    synth.generate(tmp_path / "1", "lamellarity", 5, seed=11)
    synth.generate(tmp_path / "2", "lamellarity", 5, seed=11)
    for f in sorted((tmp_path / "1").rglob("*.tif")):
        assert f.read_bytes() == (tmp_path / "2" / f.relative_to(tmp_path / "1")).read_bytes()


def test_multilamellar_has_more_membrane_than_unilamellar():
    """Measured, not assumed: dark-ring pixels inside the mask, averaged over many particles."""

    def inner_membrane_darkness(cls):
        vals = []
        for i in range(40):
            img, mask = synth.render("lamellarity", cls, 21, i)
            inside = mask > 0
            bg = np.median(img[~inside])
            vals.append(np.mean(img[inside] < bg - 20))
        return np.mean(vals)

    assert inner_membrane_darkness("multilamellar") > inner_membrane_darkness("unilamellar") * 1.3


def test_full_is_darker_inside_than_empty():
    def interior_contrast(cls):
        out = []
        for i in range(30):
            img, mask = synth.render("encapsulation", cls, 5, i)
            out.append(np.median(img[mask == 0]) - np.median(img[mask > 0]))
        return np.mean(out)

    assert interior_contrast("full") > interior_contrast("empty") + 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown problem"):
        synth.resolve_proportions("shape", None)
    with pytest.raises(ValueError, match="needs 3 non-negative proportions"):
        synth.resolve_proportions("lamellarity", (1, 2))


def test_texture_problem_layout_like_public_texture_sets(tmp_path):
    """41x41 particle images, no masks, no surround, equal shares, the declared class order."""
    prov = synth.generate(tmp_path, "texture", 36, seed=2)
    assert prov["masks"] is False and prov["surround_px"] == 0
    assert not (tmp_path / "masks").exists()
    with open(tmp_path / "manifest.csv") as fh:
        assert next(csv.reader(fh)) == ["path", "label", "group"]
    ds = load_dataset(tmp_path)
    assert ds.classes == list(synth.PROBLEMS["texture"][0])
    assert set(ds.class_counts().values()) == {6}
    assert all(s.mask is None for s in ds.samples)
    assert {read_image(s.path).array.shape for s in ds.samples} == {(synth.TEXTURE_SIDE,) * 2}


def _texture_measures(cls, n=40):
    """Per image: interior-minus-background grey, gradient coherence inside, core-minus-ring grey."""
    from scipy import ndimage

    grey, coherence, core = [], [], []
    for i in range(n):
        img, mask = synth.render("texture", cls, 3, i)
        f = img.astype(np.float64)
        inside = ndimage.binary_erosion(mask > 0, iterations=6)
        grey.append(f[inside].mean() - f[mask == 0].mean())
        gy, gx = np.gradient(ndimage.gaussian_filter(f, 1.0))
        jxx, jyy, jxy = (gx * gx)[inside].mean(), (gy * gy)[inside].mean(), (gx * gy)[inside].mean()
        coherence.append(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy))
        ys, xs = np.nonzero(mask)
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        r, radius = np.hypot(yy - ys.mean(), xx - xs.mean()), np.sqrt(mask.astype(bool).sum() / np.pi)
        core.append(f[r < radius * 0.25].mean() - f[(r > radius * 0.5) & (r < radius * 0.7)].mean())
    return np.array(grey), np.array(coherence), np.array(core)


def test_texture_classes_differ_by_texture_not_by_mean_grey():
    """Measured on rendered images: the mean interior grey is the same for every class (within a
    fraction of its spread inside a class), while a texture measure tells a class apart: stripes
    are coherent, a dense core is darker at the centre than the ring around it."""
    m = {c: _texture_measures(c) for c in synth.PROBLEMS["texture"][0]}
    class_means = [g.mean() for g, _, _ in m.values()]
    within_sd = np.mean([g.std() for g, _, _ in m.values()])
    assert max(class_means) - min(class_means) < 0.75 * within_sd
    others = [c for c in m if c != "striated"]
    assert m["striated"][1].mean() > 2 * max(m[c][1].mean() for c in others)
    others = [c for c in m if c != "dense-core"]
    assert m["dense-core"][2].mean() < 2 * min(m[c][2].mean() for c in others)  # more negative: darker core


def test_texture_problem_makes_no_micrographs(tmp_path):
    with pytest.raises(ValueError, match="particle images only"):
        synth.generate_micrographs(tmp_path / "m", "texture", 1)
    assert not (tmp_path / "m").exists()


def test_cli_offers_every_problem():
    from emclassify.cli import build_parser

    synth_parser = build_parser()._subparsers._group_actions[0].choices["synth"]
    problem = next(a for a in synth_parser._actions if a.dest == "problem")
    assert set(problem.choices) == set(synth.PROBLEMS)
