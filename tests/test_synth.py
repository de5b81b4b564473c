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
