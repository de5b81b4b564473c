"""Particle contrast (emclassify.contrast): measured against the ring around a mask, recorded on
classifier cards, and a run whose particles are of the other contrast says so."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emclassify import synth
from emclassify.assets import default_model_path
from emclassify.batch import BatchRun, run_batch
from emclassify.cli import main
from emclassify.contrast import (has_other_contrast_note, mask_contrast, other_contrast_warning,
                                 particle_contrasts, polarity_record)
from emclassify.finding import make_finder
from emclassify.inference import Classifier
from emclassify.modelfile import read_card


def _disc(value: float, side: int = 40, radius: int = 10):
    yy, xx = np.mgrid[:side, :side] - side // 2
    mask = yy ** 2 + xx ** 2 <= radius ** 2
    return np.where(mask, 100.0 + value, 100.0), mask


def test_a_particles_contrast_is_its_mean_against_the_ring_around_its_mask():
    dark, mask = _disc(-30.0)
    assert mask_contrast(dark, mask) == pytest.approx(-30.0)
    assert mask_contrast(_disc(20.0)[0], mask) == pytest.approx(20.0)
    assert mask_contrast(dark, np.zeros_like(mask)) is None     # no particle
    assert mask_contrast(dark, np.ones_like(mask)) is None      # no surroundings
    # a dark neighbour beside it does not count as its surroundings
    neighbour = np.roll(mask, 21, axis=1) & ~mask
    field = np.where(neighbour, 50.0, dark)
    assert mask_contrast(field, mask) > mask_contrast(field, mask, others=neighbour) == pytest.approx(-30.0)
    assert mask_contrast(dark, mask, others=~mask) is None      # nothing but other particles around it


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 24), st.integers(2, 24)),
              elements=st.floats(-1e6, 1e6, allow_nan=False)),
       st.data())
def test_contrast_changes_sign_with_the_image_and_ignores_an_offset(image, data):
    mask = data.draw(arrays(bool, image.shape))
    diff = mask_contrast(image, mask)
    if diff is None:
        assert not mask.any() or mask.all() or mask_contrast(image + 5.0, mask) is None
        return
    whole = particle_contrasts(image, mask.astype(np.int32))   # the finders' measure, on the whole image
    assert len(whole) == 1 and diff == pytest.approx(whole[0], rel=1e-9, abs=1e-9 * (1 + np.abs(image).max()))
    assert mask_contrast(-image, mask) == pytest.approx(-diff, abs=1e-6 * (1 + abs(diff)))
    assert mask_contrast(image + 1000.0, mask) == pytest.approx(diff, abs=1e-6 * (1e3 + abs(diff)))


def test_polarity_and_the_row_warning():
    assert polarity_record([-1.0] * 8 + [1.0] * 2)["polarity"] == "dark"
    assert polarity_record([1.0] * 9 + [-1.0])["polarity"] == "bright"
    assert polarity_record([-1.0] * 6 + [1.0] * 4)["polarity"] is None
    assert polarity_record([]) == {"particles": 0, "polarity": None}
    note = other_contrast_warning(3.0, "dark")
    assert "brighter than its surroundings" in note and has_other_contrast_note([note])
    assert other_contrast_warning(-3.0, "dark") == "" and other_contrast_warning(3.0, None) == ""
    assert "darker" in other_contrast_warning(-3.0, "bright")


def _invert_images(folder):
    for p in folder.rglob("*.tif"):
        if "masks" in p.parts:
            continue
        a = tifffile.imread(p)
        tifffile.imwrite(p, (int(a.max()) + int(a.min()) - a.astype(np.int64)).astype(a.dtype))


def test_the_bundled_model_flags_particles_of_the_other_contrast(tmp_path, capsys):
    clf = Classifier.from_file(default_model_path())
    assert clf.particle_polarity == "dark"   # its card records its synthetic liposomes' contrast
    samples = tmp_path / "samples"
    shutil.copytree(default_model_path().parents[1] / "samples", samples)
    as_made = run_batch(samples, out=tmp_path / "as_made.csv")
    assert as_made.summary["other_contrast"] == {"polarity": "dark", "with_mask": 40, "particles": 0}
    _invert_images(samples)
    outcome = run_batch(samples, out=tmp_path / "inverted.csv")
    assert outcome.summary["other_contrast"]["particles"] == 40
    assert all(has_other_contrast_note(r.warnings) for r in outcome.results)
    reopened = BatchRun.from_csv(tmp_path / "inverted.csv")
    assert reopened.summary(tmp_path / "inverted.csv")["other_contrast"]["particles"] == 40
    capsys.readouterr()
    main(["batch", str(samples), "--out", str(tmp_path / "cli.csv")])
    assert "WARNING: 40 of the 40 particles measured against their masks are brighter" in capsys.readouterr().out


def test_train_records_the_particles_contrast_and_micrograph_runs_check_it(tmp_path):
    synth.generate(tmp_path / "d", "lamellarity", 24, seed=4, proportions=(0.5, 0.4, 0.1))
    model = tmp_path / "m.safetensors"
    assert main(["train", str(tmp_path / "d"), "--out", str(model), "--arch", "lipnet1", "--size", "24",
                 "--epochs", "1"]) == 0
    record = read_card(model).data["particle_contrast"]
    assert record["polarity"] == "dark" and record["particles"] == 24 and record["darker_share"] >= 0.8
    unmasked = tmp_path / "u"
    shutil.copytree(tmp_path / "d" / "images", unmasked / "images")
    plain = tmp_path / "plain.safetensors"
    assert main(["train", str(unmasked), "--out", str(plain), "--arch", "lipnet1", "--epochs", "1"]) == 0
    assert "particle_contrast" not in read_card(plain).data   # nothing to measure against without masks

    fields = tmp_path / "fields"
    synth.generate_micrographs(fields, "lamellarity", 1, seed=5, side=512, per_micrograph=6)
    _invert_images(fields / "images")
    outcome = run_batch(fields / "images", model=model, out=tmp_path / "mg.csv",
                        finder=make_finder("classical", polarity="bright"))
    other = outcome.summary["other_contrast"]
    assert other["with_mask"] > 0 and other["particles"] == other["with_mask"]
