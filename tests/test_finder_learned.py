"""The learned particle finder: network, maps -> instances, training, model files, CLI, cross-validation,
and the end-to-end (found and classified) scores."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from emclassify.cli import main
from emclassify.defaults import EXIT_USAGE
from emclassify.finding import LearnedFinder, make_finder
from emclassify.finding.evaluate import end_to_end_scores, micrograph_folds
from emclassify.finding.finderfile import FinderCard, format_finder_card, load_finder, save_finder
from emclassify.finding.learned import MIN_PARTICLES_COMPARED, instances_from_maps
from emclassify.finding.matching import InstanceMatch, match_instances
from emclassify.contrast import POLARITY_AGREEMENT, particle_contrasts
from emclassify.finding.training import (PEAK_THRESHOLDS, FinderTrainSettings,
                                         FinderTrainingError, OutlinedMicrograph, centreness_target,
                                         choose_peak_threshold, load_outlined, particle_polarity,
                                         train_finder, train_network)
from emclassify.finding.evaluate import outlined_micrographs
from emclassify.finding.unet import FinderNet, normalise_micrograph, predict_maps
from emclassify.modelfile import ModelFileError, load_model, read_safetensors
from emclassify.runtime import cpu_has_native_bf16
from emclassify.synth import generate_micrographs

QUICK = FinderTrainSettings(steps=40, batch=4, crop=128, val_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    out = tmp_path_factory.mktemp("fields")
    generate_micrographs(out, "lamellarity", 4, seed=3, side=256, per_micrograph=8)
    return out


@pytest.fixture(scope="module")
def trained(fields, tmp_path_factory):
    loaded, errors = train_finder(fields, QUICK)
    path = save_finder(tmp_path_factory.mktemp("finder") / "finder.safetensors", loaded.net, loaded.card)
    return loaded, path


def two_touching_discs(side=64, r=12):
    yy, xx = np.mgrid[:side, :side]
    labels = np.zeros((side, side), np.int32)
    labels[(yy - 32) ** 2 + (xx - 20) ** 2 <= r * r] = 1
    labels[((yy - 32) ** 2 + (xx - 43) ** 2 <= r * r) & (labels == 0)] = 2
    return labels


# ---- from maps to particles -----------------------------------------------------------------------

def test_centreness_peaks_in_each_particle_and_separates_touching_ones():
    labels = two_touching_discs()
    centre = centreness_target(labels)
    assert centre[labels == 0].max() == 0
    for k in (1, 2):
        assert centre[labels == k].max() == pytest.approx(1.0)
    # where the discs touch the centre-ness is low: a valley between two peaks
    assert centre[32, 31] < 0.3 and centre[32, 20] > 0.9 and centre[32, 43] > 0.9


def test_instances_from_ideal_maps_split_touching_particles_and_drop_small_ones():
    labels = two_touching_discs()
    labels[5:8, 5:8] = 3  # a 9 px speck
    fg = (labels > 0).astype(np.float32)
    found, scores = instances_from_maps(fg, centreness_target(labels), 0.5, 0.5, min_area_px=20)
    m = match_instances(found, np.where(labels == 3, 0, labels))
    assert m.tp == 2 and m.fp == 0 and min(iou for *_, iou in m.pairs) > 0.9
    assert found[6, 6] == 0
    assert set(scores) == set(np.unique(found[found > 0])) and all(v == pytest.approx(1.0) for v in scores.values())
    # no seed anywhere: nothing found, not a crash
    empty, s = instances_from_maps(fg, np.zeros_like(fg))
    assert empty.max() == 0 and s == {}


def _weak_and_strong_particle(weak_peak=0.52):
    """Maps of two separate discs: one with a clear centre (peak 1.0), one whose centre-ness only
    just passes the 0.5 seed threshold (peak ``weak_peak``), as debris gives on real micrographs."""
    yy, xx = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.int32)
    labels[(yy - 20) ** 2 + (xx - 16) ** 2 <= 100] = 1
    labels[(yy - 44) ** 2 + (xx - 46) ** 2 <= 100] = 2
    centre = centreness_target(labels)
    centre[labels == 2] *= weak_peak
    return labels, (labels > 0).astype(np.float32), centre


def test_a_peak_threshold_drops_objects_whose_centre_is_weak_and_nothing_else():
    labels, fg, centre = _weak_and_strong_particle()
    kept, scores = instances_from_maps(fg, centre, 0.5, 0.5, peak_threshold=0.6)
    assert set(np.unique(kept)) == {0, 1} and set(scores) == {1}
    assert np.array_equal(kept == 1, labels == 1)
    # at or below the seed threshold it changes nothing: both objects, exactly as without it
    for peak in (0.0, 0.5):
        both, _ = instances_from_maps(fg, centre, 0.5, 0.5, peak_threshold=peak)
        assert np.array_equal(both, instances_from_maps(fg, centre, 0.5, 0.5)[0])
        assert match_instances(both, labels).tp == 2


def _whole_image_instances(fg, centre, fg_t, seed_t, min_area_px, peak_t):
    """The oracle: one watershed over the whole image and whole-image statistics (scikit-image and
    scipy as documented), which :func:`instances_from_maps` reproduces band by band."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    mask = fg > fg_t
    markers, n = ndimage.label((centre > seed_t) & mask)
    labels = watershed(-centre, markers, mask=mask).astype(np.int32)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    peaks = np.asarray(ndimage.maximum(centre, labels, np.arange(n + 1)), np.float32) if n else np.zeros(1)
    drop = (areas < min_area_px) | ((peaks < peak_t) if peak_t > seed_t else False)
    drop[0] = False
    labels[drop[labels]] = 0
    ids = [k for k in range(1, n + 1) if not drop[k] and areas[k] > 0]
    return labels, dict(zip(ids, ndimage.mean(fg, labels, ids))) if ids else {}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shape=st.tuples(st.integers(1, 90), st.integers(1, 90)),
       band=st.integers(1, 600), peak=st.sampled_from([0.0, 0.7]), min_area=st.sampled_from([0.0, 6.0]))
def test_instances_in_bands_equal_one_whole_image_watershed(seed, shape, band, peak, min_area):
    """Bands of any height (down to one pixel, so that parts span many bands' rows) give the labels
    and scores of the whole-image watershed, on smooth maps with touching blobs and noise. (Where
    seeds' pixels tie exactly, scikit-image's flooding order among them is its heap's, in either run.)"""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = rng.random(shape).astype(np.float32)
    centre = ndimage.gaussian_filter(noise, rng.uniform(0.5, 3)).astype(np.float32)
    centre = (centre - centre.min()) / max(float(np.ptp(centre)), 1e-6)
    fg = np.clip(centre + rng.normal(0, 0.2, shape), 0, 1).astype(np.float32)
    labels, scores = instances_from_maps(fg, centre, 0.4, 0.6, min_area, peak, band_pixels=band)
    want, want_scores = _whole_image_instances(fg, centre, 0.4, 0.6, min_area, peak)
    assert labels.dtype == np.int32 and np.array_equal(labels, want)
    assert scores.keys() == want_scores.keys()
    assert all(scores[k] == pytest.approx(want_scores[k], rel=1e-9) for k in scores)


def test_normalising_an_integer_micrograph_equals_normalising_its_float_copy():
    img = np.random.default_rng(4).integers(0, 65535, (37, 53)).astype(np.uint16)
    img[3, 4] = 65535
    out = normalise_micrograph(img)
    assert out.dtype == np.float32 and np.array_equal(out, normalise_micrograph(img.astype(np.float32)))
    assert -1.2 < np.percentile(out, 50) < 1.2


class _MapsFinder(LearnedFinder):
    """A learned finder whose maps are given (keyed by the micrograph's first pixel value)."""

    def maps(self, image):
        return (*self.preloaded.given_maps[int(image.flat[0])], 1.0)


def _outlined(labels, key):
    raw = np.full(labels.shape, float(key), np.float32)
    return OutlinedMicrograph(f"m{key}", raw, raw, labels, (labels > 0).astype(np.float32),
                              centreness_target(labels), np.arange(labels.max() + 1))


def test_the_peak_threshold_is_chosen_for_the_best_f1_and_the_card_uses_it(monkeypatch):
    labels, fg, centre = _weak_and_strong_particle()
    truth_one = np.where(labels == 2, 0, labels)   # the weak object is not a particle: a false positive
    card = FinderCard(widths=[4, 8], median_diameter_px=22.0, min_area_px=4.0)
    from emclassify.finding.finderfile import LoadedFinder
    loaded = LoadedFinder(FinderNet((4, 8)), card)
    loaded.given_maps = {0: (fg, centre), 1: (fg, centre)}
    finder = _MapsFinder("", preloaded=loaded)
    best, record = choose_peak_threshold(finder, [_outlined(truth_one, 0)])
    f1 = record["f1_by_threshold"]
    assert best == 0.55 and f1["0.55"] == 1.0 and f1["0"] < 1.0 and record["micrographs"] == 1
    assert set(f1) == {"0", *(f"{t:g}" for t in PEAK_THRESHOLDS if t > card.seed_threshold)}
    # where both objects are particles, dropping the weak one costs F1: no threshold is chosen
    assert choose_peak_threshold(finder, [_outlined(labels, 1)])[0] == 0.0
    card.peak_threshold = best
    assert len(finder.find(np.zeros((64, 64), np.float32)).particles) == 1
    assert FinderCard.from_dict(card.to_dict()).peak_threshold == best
    # time is bounded by megapixels (at least one micrograph), and a cancel returns at once with none
    import emclassify.finding.training as training
    from emclassify.runtime import CancelToken
    two = [_outlined(truth_one, 0), _outlined(truth_one, 1)]
    assert choose_peak_threshold(finder, two)[1]["micrographs"] == 2
    monkeypatch.setattr(training, "PEAK_CHOICE_MEGAPIXELS", 0.005)   # one 64 x 64 field is 0.004
    assert choose_peak_threshold(finder, two)[1]["micrographs"] == 1
    cancel = CancelToken()
    cancel.cancel()
    assert choose_peak_threshold(finder, two, cancel=cancel) == (0.0, {"micrographs": 0, "cancelled": True})
    # a card written before peak thresholds existed reads as none, so its finder finds as it did
    old = {k: v for k, v in card.to_dict().items() if k != "peak_threshold"}
    assert FinderCard.from_dict({**old, "format_version": 1}).peak_threshold == 0.0


def _discs_maps(n, probability):
    """Maps of ``n`` separate 20 px discs in a row: foreground probability ``probability`` on each, a
    centre-ness peak of 1 at each centre."""
    yy, xx = np.mgrid[:40, :40 * n]
    fg, centre = np.zeros((40, 40 * n), np.float32), np.zeros((40, 40 * n), np.float32)
    for k in range(n):
        r = np.sqrt((yy - 20) ** 2 + (xx - 20 - 40 * k) ** 2)
        fg[r <= 10] = probability
        centre[r <= 10] = 1 - r[r <= 10] / 10
    return fg, centre


def test_particles_scoring_under_the_cards_floor_put_their_micrograph_in_doubt():
    """On noise a trained finder outlined hundreds of blobs it was unsure of: a micrograph whose particles'
    median score is under the score 95 % of the finder's own particles reached carries a warning."""
    from emclassify.finding.finderfile import LoadedFinder
    card = FinderCard(widths=[4, 8], median_diameter_px=20.0, min_area_px=4.0,
                      metrics={"detection_scores": {"particles": 500, "q05": 0.9, "median": 0.95}})
    finder = LearnedFinder("", preloaded=LoadedFinder(FinderNet((4, 8)), card))
    confident = finder.detections(*_discs_maps(6, 0.97))
    assert [round(p.score, 4) for p in confident.particles] == [0.97] * 6 and confident.warnings == []
    unsure = finder.detections(*_discs_maps(6, 0.7))
    assert len(unsure.particles) == 6 and len(unsure.warnings) == 1
    assert "unlike those the finder was trained on" in unsure.warnings[0]
    assert "0.70" in unsure.warnings[0] and "0.90" in unsure.warnings[0]
    # a median of fewer particles says too little; a finder file without the reference cannot compare
    assert finder.detections(*_discs_maps(MIN_PARTICLES_COMPARED - 1, 0.7)).warnings == []
    card.metrics = {}
    assert card.score_floor is None and finder.detections(*_discs_maps(6, 0.7)).warnings == []
    # the reference is checked when a card is read
    with pytest.raises(ModelFileError, match="detection_scores"):
        FinderCard.from_dict({**card.to_dict(), "metrics": {"detection_scores": {"q05": 1.5, "median": 0.9}}})


def test_the_card_records_what_the_particles_at_the_chosen_cut_scored():
    labels, fg, centre = _weak_and_strong_particle()
    card = FinderCard(widths=[4, 8], median_diameter_px=22.0, min_area_px=4.0)
    from emclassify.finding.finderfile import LoadedFinder
    loaded = LoadedFinder(FinderNet((4, 8)), card)
    loaded.given_maps = {0: (fg, centre)}
    finder = _MapsFinder("", preloaded=loaded)
    best, record = choose_peak_threshold(finder, [_outlined(labels, 0)])
    card.peak_threshold = best
    found = finder.detections(fg, centre)
    scores = np.array([p.score for p in found.particles])
    assert record["detection_scores"] == {"particles": len(scores), "q05": round(float(np.quantile(scores, 0.05)), 4),
                                          "median": round(float(np.median(scores)), 4)}


def _discs_field(contrasts, seed=0):
    """A noisy 80 x (40 n) field of n separate discs (radius 9) whose intensity differs from the
    background by ``contrasts[k]``, and its instance labels."""
    n = len(contrasts)
    yy, xx = np.mgrid[:80, :40 * n]
    labels = np.zeros(yy.shape, np.int32)
    image = np.random.default_rng(seed).normal(100.0, 1.0, yy.shape).astype(np.float32)
    for k, c in enumerate(contrasts):
        disc = (yy - 40) ** 2 + (xx - 20 - 40 * k) ** 2 <= 81
        labels[disc] = k + 1
        image[disc] += c
    return image, labels


def test_each_particles_contrast_is_measured_against_a_ring_around_it():
    image, labels = _discs_field([-30.0, 20.0, -5.0])
    diffs = particle_contrasts(normalise_micrograph(image), labels)
    assert len(diffs) == 3 and diffs[0] < diffs[2] < 0 < diffs[1]
    # a particle with no unoutlined pixels around it is left out
    packed = np.ones((20, 20), np.int32)
    assert len(particle_contrasts(normalise_micrograph(np.arange(400.0).reshape(20, 20)), packed)) == 0


@pytest.mark.parametrize("contrasts,polarity", [([-30.0] * 9, "dark"), ([30.0] * 9, "bright"),
                                                ([-30.0] * 8 + [30.0], "dark"), ([-30.0] * 5 + [30.0] * 4, None)])
def test_the_training_particles_contrast_is_dark_bright_or_mixed(contrasts, polarity):
    image, labels = _discs_field(contrasts)
    outlined = OutlinedMicrograph("m", normalise_micrograph(image), image, labels, (labels > 0).astype(np.float32),
                                  centreness_target(labels), np.arange(labels.max() + 1))
    found, record = particle_polarity([outlined])
    assert found == polarity
    assert record["particles"] == len(contrasts)
    assert record["darker_share"] == round(sum(c < 0 for c in contrasts) / len(contrasts), 4)
    assert (found is None) == (max(record["darker_share"], 1 - record["darker_share"]) < POLARITY_AGREEMENT)


def test_a_finder_told_the_particles_other_contrast_inverts_the_micrograph(trained, fields):
    """The network sees an inverted micrograph exactly as the micrograph of the contrast it learnt; a
    finder file that does not record that contrast cannot be told another."""
    loaded, path = trained
    assert loaded.card.polarity == "dark"   # the synthetic liposomes' membranes are dark
    assert loaded.card.metrics["particle_contrast"]["darker_share"] >= POLARITY_AGREEMENT
    from emclassify.io import read_image
    image = read_image(outlined_micrographs(fields)[0][0]).array.astype(np.float32)
    as_learnt = LearnedFinder("", preloaded=loaded)
    told_bright = make_finder("learned", model=str(path), polarity="bright")
    assert told_bright.inverts and not as_learnt.inverts and not make_finder("learned", model=str(path), polarity="dark").inverts
    assert told_bright.params()["polarity"] == "bright"
    a, b = as_learnt.maps(image), told_bright.maps(image.max() - image)
    assert np.allclose(a[0], b[0], atol=1e-4) and np.allclose(a[1], b[1], atol=1e-4)
    older = replace(loaded.card, polarity=None)
    from emclassify.finding.finderfile import LoadedFinder
    with pytest.raises(ValueError, match="does not record the contrast"):
        LearnedFinder("", polarity="bright", preloaded=LoadedFinder(loaded.net, older))
    with pytest.raises(ValueError, match="polarity must be"):
        LearnedFinder("", polarity="grey", preloaded=loaded)


# ---- the network ----------------------------------------------------------------------------------

def _random_net(seed=0):
    torch.manual_seed(seed)
    net = FinderNet((4, 8, 8, 16))
    for m in net.modules():  # non-trivial batch-norm statistics, so folding is really exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("native", [False, None])
def test_inference_path_equals_the_training_graph_in_eval_mode(native):
    net = _random_net()
    x = torch.randn(2, 1, 40, 48)
    with torch.no_grad():
        ref = net(x)
    assert torch.allclose(net.infer(x, native=native), ref, atol=1e-4, rtol=1e-4)


def test_tiled_prediction_equals_whole_image_prediction():
    net = _random_net(1)
    img = normalise_micrograph(np.random.default_rng(0).normal(100, 20, (300, 261)))
    whole = predict_maps(net, img, tile=4096)
    tiled = predict_maps(net, img, tile=160, halo=64)
    for a, b in zip(whole, tiled):
        assert a.shape == img.shape
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_maps_averaged_over_eight_views_turn_with_the_micrograph():
    """views=8 averages the maps of the 8 rotations/reflections, each turned back: so the result turns
    exactly with the micrograph (one network alone does not), in tiles too, and stays a probability."""
    net = _random_net(2)
    img = normalise_micrograph(np.random.default_rng(1).normal(100, 20, (96, 96)))
    fg, centre = predict_maps(net, img, views=8)
    assert fg.shape == img.shape and 0 <= fg.min() and fg.max() <= 1
    for turned, turn in ((np.rot90(img), np.rot90), (img[:, ::-1], lambda a: a[:, ::-1]),
                         (np.rot90(img, 3)[::-1], lambda a: np.rot90(a, 3)[::-1])):
        fg_t, centre_t = predict_maps(net, np.ascontiguousarray(turned), views=8)
        np.testing.assert_allclose(fg_t, turn(fg), atol=1e-5)
        np.testing.assert_allclose(centre_t, turn(centre), atol=1e-5)
    plain = predict_maps(net, img)[0]
    assert not np.allclose(predict_maps(net, np.ascontiguousarray(np.rot90(img)))[0], np.rot90(plain), atol=1e-5)
    tiled = predict_maps(net, normalise_micrograph(np.random.default_rng(2).normal(100, 20, (300, 261))), tile=160,
                         halo=64, views=8)[0]
    whole = predict_maps(net, normalise_micrograph(np.random.default_rng(2).normal(100, 20, (300, 261))), views=8)[0]
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    with pytest.raises(ValueError, match="views"):
        predict_maps(net, img, views=4)


def test_odd_sizes_and_flat_images_give_maps_of_their_own_size():
    net = _random_net()
    for shape in [(1, 1), (3, 500), (17, 9)]:
        fg, centre = predict_maps(net, normalise_micrograph(np.zeros(shape)))
        assert fg.shape == shape and centre.shape == shape and np.isfinite(fg).all()
    assert not normalise_micrograph(np.full((10, 10), 7.0)).any()


# ---- training, files ------------------------------------------------------------------------------

def test_train_save_load_run_round_trip(trained, fields):
    loaded, path = trained
    card = loaded.card
    assert card.data["micrographs"] == 3 and len(card.data["validation_names"]) == 1
    v = card.metrics["validation"]
    assert set(v) >= {"learned", "classical", "micrographs"} and 0 <= v["learned"]["f1"] <= 1
    assert card.training["steps_done"] == QUICK.steps and card.training["stopped"] == "completed"
    assert 0.3 <= card.seed_threshold <= 0.7
    # the peak threshold was chosen on the validation micrograph, for its best F1, and is on the card
    choice = card.metrics["peak_threshold"]
    assert choice["chosen_on"] == "validation micrographs" and choice["micrographs"] == 1
    assert choice["f1_by_threshold"][f"{card.peak_threshold:g}"] == max(choice["f1_by_threshold"].values())
    # and what the particles found there scored, the reference a new micrograph's particles are held to
    scores = card.metrics["detection_scores"]
    assert scores["on"] == "validation micrographs" and scores["micrographs"] == 1
    assert scores["particles"] > 0 and 0 <= scores["q05"] <= scores["median"] <= 1 and card.score_floor == scores["q05"]
    again = load_finder(path)
    assert again.card.to_dict() == card.to_dict()
    for k, t in loaded.net.state_dict().items():
        assert torch.equal(t, again.net.state_dict()[k])
    image = outlined_micrographs(fields)[0][0]
    from emclassify.io import read_image
    raw = read_image(image).array
    a = LearnedFinder("", preloaded=loaded).find(raw)
    b = make_finder("learned", model=str(path)).find(raw)
    assert np.array_equal(a.labels, b.labels)
    assert all(0 <= p.score <= 1 for p in b.particles)


def test_a_blank_micrograph_has_no_particles_and_says_why(trained):
    """The network's maps of a flat input hold edge artefacts (a trained finder found 4 "particles" on a
    constant 16-bit micrograph): a flat micrograph gives none, with the classical finder's note."""
    loaded, _ = trained
    for blank in (np.full((300, 200), 1234, np.uint16), np.zeros((64, 64), np.float32)):
        det = LearnedFinder("", preloaded=loaded).find(blank)
        assert det.particles == [] and not det.labels.any() and det.labels.shape == blank.shape
        assert any("flat image" in n for n in det.notes)


def test_training_learns_to_find_particles(fields):
    """More steps on the same fields: it must beat an untrained network clearly on held-out fields."""
    # at the default precision (bf16 steps where the CPU has them, which lagged float32 at 150 steps on
    # these tiny fields in 2 of 4 seeds and matched it at 300: BENCHMARKS.md)
    settings = FinderTrainSettings(steps=300, batch=4, crop=128, val_fraction=0.25, seed=1)
    loaded, _ = train_finder(fields, settings)
    learned = loaded.card.metrics["validation"]["learned"]
    assert learned["f1"] >= 0.5 and learned["mean_iou"] >= 0.6


def test_a_classifier_file_is_refused_as_a_finder_and_vice_versa(trained, tmp_path):
    from emclassify.assets import default_model_path

    _, path = trained
    with pytest.raises(ModelFileError, match="classifier"):
        load_finder(default_model_path())
    with pytest.raises(ModelFileError, match="particle-finder"):
        load_model(path)
    with pytest.raises(ValueError, match="finder model|needs its model"):
        make_finder("learned")
    with pytest.raises(ValueError, match="polarity"):
        make_finder("learned", model=str(path), polarity="grey")


def test_a_card_that_does_not_match_its_weights_is_refused(trained, tmp_path):
    loaded, _ = trained
    card = FinderCard.from_dict({**loaded.card.to_dict(), "widths": [4, 8]})
    bad = save_finder(tmp_path / "bad.safetensors", loaded.net, card)
    with pytest.raises(ModelFileError, match="do not match"):
        load_finder(bad)
    for field, value in [("seed_threshold", 3.0), ("peak_threshold", -0.1), ("peak_threshold", "high"),
                         ("widths", "big"), ("median_diameter_px", float("nan")),
                         ("arch", "yolo"), ("format_version", 99), ("polarity", "grey"), ("polarity", 1)]:
        with pytest.raises(ModelFileError, match="invalid particle-finder card"):
            FinderCard.from_dict({**loaded.card.to_dict(), field: value})


def test_the_training_device_is_checked_before_any_work_and_recorded(trained, fields, tmp_path, capsys):
    loaded, _ = trained
    assert loaded.card.training["device"] == "cpu" and loaded.card.training["seconds"] >= 0
    with pytest.raises(ValueError, match="unknown device"):
        FinderTrainSettings(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            FinderTrainSettings(device="cuda")
        assert main(["train-finder", str(fields), "--device", "cuda", "--out", str(tmp_path / "f.safetensors")]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "f.safetensors").exists()


def test_bf16_finder_steps_learn_keep_float32_weights_and_are_recorded(trained, fields):
    loaded, _ = trained
    # the default, auto: bf16 steps where the CPU has native bf16 (the training device here is the CPU)
    assert loaded.card.training["precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    net, record = train_network(load_outlined(outlined_micrographs(fields), fields)[0],
                                replace(QUICK, precision="bfloat16"))
    assert record["precision"] == "bfloat16" and np.isfinite(record["final_loss"])
    assert all(p.dtype == torch.float32 for p in net.state_dict().values() if p.is_floating_point())
    with pytest.raises(ValueError, match="precision"):
        FinderTrainSettings(precision="fp16")


def test_too_few_micrographs_is_a_clear_error(tmp_path):
    out = tmp_path / "one"
    generate_micrographs(out, "lamellarity", 1, seed=0, side=128, per_micrograph=3)
    with pytest.raises(FinderTrainingError, match="at least 2"):
        train_finder(out, QUICK)


def test_unreadable_micrographs_are_listed_and_left_out(fields, tmp_path):
    import shutil
    copy = tmp_path / "f"
    shutil.copytree(fields, copy)
    (copy / "images" / "broken.tif").write_bytes(b"II*\x00garbage")
    data, errors = load_outlined(outlined_micrographs(copy), copy)
    assert len(data) == 4 and [e["micrograph"] for e in errors] == ["images/broken.tif"]


# ---- end-to-end scores and folds --------------------------------------------------------------------

def test_end_to_end_scores_count_finding_and_classifying_errors():
    # outlined: 1 A, 2 A, 3 B. found: 10 matches 1 (called A: right), 11 matches 3 (called A: wrong),
    # 12 matches nothing (called B). Outlined 2 is not found.
    match = InstanceMatch(3, 3, [(10, 1, 0.9), (11, 3, 0.8)])
    s = end_to_end_scores([(match, {10: "A", 11: "A", 12: "B"}, {1: "A", 2: "A", 3: "B"})], ["A", "B"])
    # A: tp 1 (10), fp 1 (11), fn 1 (2)  -> 2/4;  B: tp 0, fp 1 (12), fn 1 (3) -> 0
    assert s["per_class_f1"] == {"A": 0.5, "B": 0.0} and s["macro_f1"] == 0.25
    assert s["matched_particles"] == 2 and s["matched_accuracy"] == 0.5
    # nothing says where 12 lies: it counts; once it lies where nothing is outlined, the diagnostic
    # leaves it out (B: fp 0 -> 0 still, for B's one outlined particle was called A), A unchanged
    assert s["unoutlined"] == {"found": 0, "macro_f1_without": 0.25}
    match.spurious_kinds = {12: "unoutlined"}
    u = end_to_end_scores([(match, {10: "A", 11: "A", 12: "B"}, {1: "A", 2: "A", 3: "B"})], ["A", "B"])
    assert u["macro_f1"] == 0.25 and u["unoutlined"] == {"found": 1, "macro_f1_without": 0.25}
    # outlined 3 called B as well: B tp 1, fp 1 (12), fn 0 -> 2/3; without 12: 1.0
    v = end_to_end_scores([(match, {10: "A", 11: "B", 12: "B"}, {1: "A", 2: "A", 3: "B"})], ["A", "B"])
    assert v["per_class_f1"]["B"] == round(2 / 3, 4)
    assert v["unoutlined"] == {"found": 1, "macro_f1_without": round((v["per_class_f1"]["A"] + 1.0) / 2, 4)}
    assert "on_outlines" not in v
    # the classifier alone, on the three outlined particles as if found: 1 and 2 called A (right),
    # 3 called A (wrong) -> A: tp 2, fp 1 -> 0.8; B: fn 1 -> 0
    perfect = InstanceMatch(3, 3, [(1, 1, 1.0), (2, 2, 1.0), (3, 3, 1.0)])
    w = end_to_end_scores([(match, {10: "A", 11: "A", 12: "B"}, {1: "A", 2: "A", 3: "B"})], ["A", "B"],
                          [(perfect, {1: "A", 2: "A", 3: "A"}, {1: "A", 2: "A", 3: "B"})])
    assert w["on_outlines"] == {"macro_f1": 0.4, "per_class_f1": {"A": 0.8, "B": 0.0}, "matched_particles": 3,
                                "matched_accuracy": round(2 / 3, 4)}
    assert w["macro_f1"] == s["macro_f1"]   # the end-to-end figure itself is untouched


def test_micrograph_folds_partition_the_micrographs():
    parts = micrograph_folds(31, 5, seed=0)
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(31)) and max(map(len, parts)) - min(map(len, parts)) <= 1


# ---- the command line -----------------------------------------------------------------------------

def test_cli_train_finder_info_batch_and_find_eval(fields, tmp_path, capsys):
    model = tmp_path / "finder.safetensors"
    assert main(["train-finder", str(fields), "--out", str(model), "--steps", "20", "--batch", "2",
                 "--crop", "96", "--val-fraction", "0.25"]) == 0
    assert "validation on 1 held-out micrographs" in capsys.readouterr().out
    # the default trains on every micrograph and says that the card holds no validation
    all_in = tmp_path / "all.safetensors"
    assert main(["train-finder", str(fields), "--out", str(all_in), "--steps", "5", "--batch", "2", "--crop", "64"]) == 0
    assert "not validated" in capsys.readouterr().out
    card = load_finder(all_in).card
    assert card.data["micrographs"] == 4 and card.data["validation_names"] == [] and card.seed_threshold == 0.5
    assert card.metrics["peak_threshold"]["chosen_on"] == "training micrographs"
    assert main(["info", str(model)]) == 0
    printed = capsys.readouterr().out
    assert "unet-centreness" in printed and "centre peak threshold chosen on 1 validation micrographs" in printed
    assert "particles: dark on their background" in printed
    assert main(["info", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "emclassify-finder"

    out = tmp_path / "run.csv"
    rc = main(["batch", str(fields / "images"), "--micrographs", "--finder", "learned", "--finder-model", str(model),
               "--out", str(out), "--quiet"])
    assert rc in (0, 3) and out.exists()
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["finding"]["finder"] == "learned" and summary["finding"]["model_sha256"]
    # told that the particles are bright, the finder inverts the micrographs, and the record says so
    bright = tmp_path / "bright.csv"
    assert main(["batch", str(fields / "images"), "--micrographs", "--finder", "learned", "--finder-model", str(model),
                 "--polarity", "bright", "--out", str(bright), "--quiet"]) in (0, 3)
    assert json.loads(bright.with_suffix(".summary.json").read_text())["finding"]["polarity"] == "bright"

    from emclassify.assets import default_model_path
    metrics = tmp_path / "m.json"
    assert main(["find-eval", str(fields), "--finder", "learned", "--finder-model", str(model),
                 "--classifier", str(default_model_path()), "--out", str(metrics)]) == 0
    captured = capsys.readouterr()
    assert "end to end" in captured.out
    # the bundled model's card does not list its training micrographs: said, since it cannot be checked
    assert "cannot be checked" in captured.err
    m = json.loads(metrics.read_text())
    assert any("cannot be checked" in w for w in m["warnings"])
    assert 0 <= m["end_to_end"]["macro_f1"] <= 1 and m["overall"]["micrographs"] == 4
    report = metrics.with_suffix(".md").read_text()
    assert "End to end with the learned finder" in report and report.count("synth") >= 4
    # the classifier alone on the outlined particles: every outlined particle is its own match
    perfect = m["end_to_end"]["on_outlines"]
    assert perfect["matched_particles"] == m["overall"]["true"]
    assert "perfect finder" in report and "perfect finder" in captured.out
    o = m["overall"]   # every error has a kind, in the JSON, the report and the CLI
    assert sum(o["missed_by_kind"].values()) == o["true"] - o["matched"]
    assert sum(o["spurious_by_kind"].values()) == o["found"] - o["matched"]
    assert f"missed {o['true'] - o['matched']}" in report and f"missed {o['true'] - o['matched']}" in captured.out

    cv = tmp_path / "cv.json"
    assert main(["find-eval", str(fields), "--folds", "2", "--steps", "5", "--batch", "2", "--crop", "64",
                 "--finder-views", "1", "8", "--out", str(cv)]) == 0
    printed = capsys.readouterr().out
    assert "learned 8 views finder, 2-fold by micrograph" in printed
    r = json.loads(cv.read_text())
    # each fold's figures are printed as soon as it ends, before the overall ones
    for fold in r["per_fold"]:
        line = f"fold {fold['fold']}/2  learned_8_views: F1 {fold['learned_8_views']['f1']:.3f}"
        assert line in printed and printed.index(line) < printed.index("2-fold by micrograph")
    report = cv.with_suffix(".md").read_text()
    assert "| learned |" in report and "| learned_8_views |" in report and "| classical |" in report
    assert r["finders"] == ["learned", "learned_8_views", "classical"]
    assert r["learned"]["overall"]["micrographs"] == 4 == r["classical"]["overall"]["micrographs"]
    assert r["learned_8_views"]["overall"]["micrographs"] == 4
    assert r["learned_8_views"]["per_micrograph"][0]["micrograph"] == r["learned"]["per_micrograph"][0]["micrograph"]
    # several views are compared in cross-validation only; the classical finder takes none
    assert main(["find-eval", str(fields), "--finder-views", "1", "8", "--out", str(tmp_path / "x.json")]) == EXIT_USAGE
    assert "--folds" in capsys.readouterr().err
    assert main(["find-eval", str(fields), "--finder-views", "8", "--out", str(tmp_path / "x.json")]) == EXIT_USAGE
    assert "does not take views" in capsys.readouterr().err
    assert main(["batch", str(fields / "images"), "--finder-views", "8", "--out", str(tmp_path / "x.csv")]) == EXIT_USAGE
    assert "add --micrographs" in capsys.readouterr().err
    assert sorted(m for f in r["per_fold"] for m in f["test"]) == sorted(
        p[0].relative_to(fields).as_posix() for p in outlined_micrographs(fields))


def test_cli_learned_finder_without_or_with_a_wrong_model_file(fields, tmp_path, capsys):
    from emclassify.assets import default_model_path

    args = ["batch", str(fields / "images"), "--micrographs", "--finder", "learned", "--out", str(tmp_path / "x.csv")]
    assert main(args) == EXIT_USAGE
    assert "finder-model" in capsys.readouterr().err
    assert main(args + ["--finder-model", str(default_model_path())]) == EXIT_USAGE
    assert "classifier" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_the_finder_file_container_is_checked_like_a_model_file(tmp_path):
    pickle = tmp_path / "f.safetensors"
    pickle.write_bytes(b"\x80\x04junk")
    with pytest.raises(ModelFileError, match="pickle"):
        read_safetensors(pickle)
    with pytest.raises(ModelFileError, match="pickle"):
        load_finder(pickle)


# ---- parsers never raise anything but their own error (hypothesis) ----------------------------------

from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)
_metrics = st.fixed_dictionaries({"validation": st.fixed_dictionaries(
    {"learned": st.dictionaries(st.sampled_from(["f1", "mean_iou"]), _json), "classical": _json}), "flags": _json,
    "peak_threshold": _json | st.fixed_dictionaries({"f1_by_threshold": st.dictionaries(st.text(max_size=4), _json),
                                                     "micrographs": _json, "chosen_on": _json}),
    "detection_scores": _json | st.fixed_dictionaries({"q05": _json | st.floats(0, 1), "median": _json | st.floats(0, 1),
                                                       "particles": _json, "on": _json})})
_card_keys = st.sampled_from(["format", "format_version", "arch", "widths", "median_diameter_px", "min_area_px",
                              "foreground_threshold", "seed_threshold", "peak_threshold", "training", "metrics",
                              "data", "software",
                              "name", "created"])


@hsettings(max_examples=150, deadline=None)
@given(st.dictionaries(_card_keys, _json, max_size=14) | _json | st.builds(lambda m: {"metrics": m}, _metrics))
def test_finder_card_parser_accepts_or_names_the_problem(d):
    valid = {"format": "emclassify-finder", "format_version": 1, "arch": "unet-centreness", "widths": [4, 8],
             "median_diameter_px": 20.0, "min_area_px": 10.0}
    for candidate in (d, {**valid, **d} if isinstance(d, dict) else d):
        try:
            card = FinderCard.from_dict(candidate)
        except ModelFileError as exc:
            assert "invalid particle-finder card" in str(exc)
        else:
            assert FinderCard.from_dict(card.to_dict()).to_dict() == card.to_dict()
            assert format_finder_card(card)  # any valid card prints (metrics may hold anything)


@hsettings(max_examples=100, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: ("micrograph,particle,label\n" + t).encode()))
def test_particles_csv_parser_never_raises(tmp_path_factory, raw):
    from emclassify.finding.evaluate import truth_classes
    folder = tmp_path_factory.mktemp("csv")
    (folder / "particles.csv").write_bytes(raw)
    out = truth_classes(folder)
    assert isinstance(out, dict) and all(isinstance(k[1], int) and isinstance(v, str) for k, v in out.items())


def test_instance_images_with_odd_numbers(tmp_path):
    """Huge label values are renumbered (no huge arrays); negative ones are an error naming the file."""
    import tifffile
    (tmp_path / "images").mkdir()
    (tmp_path / "instances").mkdir()
    img = np.full((40, 40), 200, np.uint8)
    img[5:15, 5:15] = 50
    big = np.zeros((40, 40), np.uint32)
    big[5:15, 5:15] = 4_000_000_000
    tifffile.imwrite(tmp_path / "images" / "a.tif", img)
    tifffile.imwrite(tmp_path / "instances" / "a.tif", big)
    tifffile.imwrite(tmp_path / "images" / "b.tif", img)
    tifffile.imwrite(tmp_path / "instances" / "b.tif", np.where(big > 0, -3, 0).astype(np.int16))
    data, errors = load_outlined(outlined_micrographs(tmp_path), tmp_path)
    assert len(data) == 1 and data[0].labels.max() == 1 and (data[0].labels > 0).sum() == 100
    assert data[0].label_ids.tolist() == [0, 4_000_000_000]  # the file's own number is kept
    assert errors == [{"micrograph": "images/b.tif", "error": errors[0]["error"]}] and "negative" in errors[0]["error"]


# ---- COCO polygons instead of instance images ------------------------------------------------------

def _coco_from_instances(folder, out_json):
    """Write the instance images of a synthetic folder as COCO polygons (contours at 0.5)."""
    import csv as _csv
    from skimage.measure import find_contours
    from emclassify.io import read_image
    classes = {(r["micrograph"], int(r["particle"])): r["label"]
               for r in _csv.DictReader(open(folder / "particles.csv", newline=""))}
    names = sorted(set(classes.values()))
    doc = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    for i, (img, inst) in enumerate(outlined_micrographs(folder)):
        labels = read_image(inst).array.astype(int)
        rel = img.relative_to(folder).as_posix()
        doc["images"].append({"id": i, "file_name": rel, "width": labels.shape[1], "height": labels.shape[0]})
        for k in range(1, labels.max() + 1):
            contour = max(find_contours(np.pad(labels == k, 1).astype(float), 0.5), key=len) - 1 + 0.5
            doc["annotations"].append({"image_id": i, "category_id": names.index(classes[(rel, k)]) + 1,
                                       "segmentation": [contour[:, ::-1].ravel().round(2).tolist()]})
    out_json.write_text(json.dumps(doc))


def test_coco_polygons_stand_in_for_instance_images(fields, tmp_path):
    import shutil
    from emclassify.finding.evaluate import truth_classes
    copy = tmp_path / "coco"
    shutil.copytree(fields / "images", copy / "images")
    _coco_from_instances(fields, copy / "annotations.coco.json")
    from_coco, errors = load_outlined(outlined_micrographs(copy), copy)
    from_tiff, _ = load_outlined(outlined_micrographs(fields), fields)
    assert not errors and len(from_coco) == len(from_tiff) == 4
    for a, b in zip(from_coco, from_tiff):
        m = match_instances(a.labels, b.labels)
        assert m.tp == b.labels.max() and min(iou for *_, iou in m.pairs) > 0.85
    # classes come from the COCO categories when there is no particles.csv
    coco_classes, csv_classes = truth_classes(copy), truth_classes(fields)
    assert coco_classes == csv_classes


def test_coco_problems_are_named(tmp_path):
    from emclassify.finding.coco import CocoError, read_coco
    bad = tmp_path / "a.json"
    bad.write_text("{not json")
    with pytest.raises(CocoError, match="a.json"):
        read_coco(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(CocoError, match="not a COCO file"):
        read_coco(bad)
    doc = {"images": [{"id": 1, "file_name": "images/m.tif", "width": 20, "height": 20}],
           "categories": [{"id": 1, "name": "A"}],
           "annotations": [{"image_id": 1, "category_id": 1, "segmentation": {"counts": "xx", "size": [20, 20]}},
                           {"image_id": 1, "category_id": 9, "segmentation": [[1, 1, 5, 1, 5, 5]]},
                           {"image_id": 1, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 8, 1, 8]]}]}
    bad.write_text(json.dumps(doc))
    image = read_coco(bad)["images/m.tif"]
    assert len(image.particles) == 1 and len(image.problems) == 2
    assert "RLE" in image.problems[0] and "category_id 9" in image.problems[1]


@hsettings(max_examples=150, deadline=None)
@given(_json | st.fixed_dictionaries({"images": st.lists(_json, max_size=3), "annotations": st.lists(_json, max_size=3),
                                      "categories": st.lists(_json, max_size=3)}))
def test_coco_parser_accepts_or_names_the_problem(tmp_path_factory, doc):
    from emclassify.finding.coco import CocoError, read_coco
    path = tmp_path_factory.mktemp("coco") / "c.json"
    path.write_text(json.dumps(doc))
    try:
        table = read_coco(path)
    except CocoError as exc:
        assert "c.json" in str(exc)
    else:
        for image in table.values():
            assert image.labels().shape == (image.height, image.width)


def test_resume_knows_a_moved_finder_file_by_its_content(trained, fields, tmp_path, capsys):
    import shutil
    loaded, path = trained
    out = tmp_path / "run.csv"
    args = ["batch", str(fields / "images"), "--micrographs", "--finder", "learned", "--out", str(out), "--quiet"]
    assert main(args + ["--finder-model", str(path)]) in (0, 3)
    moved = tmp_path / "elsewhere" / "finder.safetensors"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert main(args + ["--finder-model", str(moved), "--resume"]) in (0, 3)
    # a record from before the finder had views and polarity (it ran plain maps of the contrast it learnt)
    # resumes as such, not as 8 views or as told another contrast
    summary = out.with_suffix(".summary.json")
    record = json.loads(summary.read_text())
    assert record["finding"].pop("views") == 1 and record["finding"].pop("polarity") is None
    summary.write_text(json.dumps(record))
    assert main(args + ["--finder-model", str(path), "--resume"]) in (0, 3)
    for other_setting in (["--finder-views", "8"], ["--polarity", "bright"]):
        summary.write_text(json.dumps(record))
        rc = main(args + ["--finder-model", str(path), *other_setting, "--resume"])
        assert rc not in (0, 3) and "written for micrographs" in capsys.readouterr().err
    # another finder (other weights) is refused
    other = save_finder(tmp_path / "other.safetensors", FinderNet(loaded.card.widths), loaded.card)
    rc = main(args + ["--finder-model", str(other), "--resume"])
    assert rc not in (0, 3) and "written for micrographs" in capsys.readouterr().err


def test_unusable_outputs_and_truncated_files_are_refused_before_any_work(fields, trained, tmp_path, capsys):
    _, path = trained
    folder_out = tmp_path / "a-folder"
    folder_out.mkdir()
    assert main(["train-finder", str(fields), "--out", str(folder_out), "--steps", "1"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["find-eval", str(fields), "--out", str(folder_out)]) == 2
    assert "is a folder" in capsys.readouterr().err
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ModelFileError, match="truncated"):
        load_finder(truncated)


# ---- a classifier trained on the particles a finder finds ------------------------------------------

class _TruthFinder:
    """A finder that finds exactly the outlined particles, renumbered (as any finder numbers them)."""

    name = "truth"

    def __init__(self, truth_by_image):
        self.truth_by_image = truth_by_image

    def params(self):
        return {"finder": self.name}

    def find(self, image, pixel_size_nm=None):
        from emclassify.finding import measure
        labels = self.truth_by_image[image.tobytes()]
        ids = [k for k in np.unique(labels) if k]
        found = np.zeros(labels.shape, np.int32)
        for new, k in enumerate(reversed(ids), start=1):
            found[labels == k] = new
        return measure(found, {k: 1.0 for k in range(1, len(ids) + 1)}, None)


def test_found_training_crops_carry_the_class_of_the_outlined_particle_they_match(fields, tmp_path):
    """Labels follow the matching (not the finder's numbering), also when the instance file's
    numbers are not 1..n; the folder is a dataset `train` reads, grouped by micrograph."""
    import csv as _csv
    import tifffile
    from emclassify.finding.evaluate import truth_classes, write_found_training_crops
    from emclassify.io import load_dataset

    # the same fields, with every instance number multiplied by 7 (and particles.csv to match)
    odd = tmp_path / "odd"
    (odd / "images").mkdir(parents=True)
    (odd / "instances").mkdir()
    rows = list(_csv.DictReader(open(fields / "particles.csv", newline="")))
    tiny = None
    for img, inst in outlined_micrographs(fields):
        (odd / "images" / img.name).write_bytes(img.read_bytes())
        labels = tifffile.imread(inst).astype(np.int32) * 7
        if tiny is None:  # plus one outlined particle of 5 x 5 px: under the classifier's minimum side
            y, x = np.argwhere(np.lib.stride_tricks.sliding_window_view(labels, (5, 5)).max(axis=(2, 3)) == 0)[0]
            labels[y:y + 5, x:x + 5] = 7000
            tiny = {**rows[0], "micrograph": img.relative_to(fields).as_posix(), "particle": 1000}
        tifffile.imwrite(odd / "instances" / inst.name, labels)
    with open(odd / "particles.csv", "w", newline="") as fh:
        w = _csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{**r, "particle": int(r["particle"]) * 7} for r in rows + [tiny]])
    data, errors = load_outlined(outlined_micrographs(odd), odd)
    truths = truth_classes(odd)
    assert not errors and len(truths) == len(rows) + 1
    finder = _TruthFinder({d.raw.tobytes(): d.labels for d in data})

    counts = write_found_training_crops(data, finder, truths, tmp_path / "crops", context=6)
    # the 5 x 5 px particle is found and matched but left out: train would refuse it
    assert counts == {"particles": len(rows), "found": len(rows) + 1, "outlined": len(rows) + 1, "too_small": 1}
    ds = load_dataset(tmp_path / "crops")
    by_class = {}
    for r in rows:
        by_class[r["label"]] = by_class.get(r["label"], 0) + 1
    assert ds.class_counts() == by_class
    assert set(ds.groups) == {Path(d.name).with_suffix("").as_posix() for d in data}
    # each crop is the particle's box plus 6 px (inside the field), its mask the particle
    for sample in ds.samples[:5]:
        mask = tifffile.imread(sample.mask) > 0
        rows_, cols_ = np.nonzero(mask)
        assert mask.any() and rows_.min() <= 6 and cols_.min() <= 6


def test_a_classifier_trained_on_found_particles_knows_their_classes(fields, tmp_path):
    from emclassify.finding.evaluate import classifier_on_found, truth_classes

    data, _ = load_outlined(outlined_micrographs(fields), fields)
    finder = _TruthFinder({d.raw.tobytes(): d.labels for d in data})
    truths = truth_classes(fields)
    clf, counts = classifier_on_found(data, finder, truths, tmp_path, context=6)
    assert sorted(clf.classes) == sorted(set(truths.values()))
    assert counts["particles"] == len(truths)
    # its card lists the micrographs it learned from, so scoring it on them is called optimistic
    from emclassify.finding.evaluate import classifier_saw
    names = [d.name for d in data]
    assert f"trained on particles of {len(names)} of the {len(names)} scored micrographs" in classifier_saw(clf, names)
    assert classifier_saw(clf, ["images/another-micrograph.tif"]) is None
    clf.card.data["groups"] = len(clf.card.data["group_names"]) + 1  # a card that could not list them all
    assert "cannot be checked" in classifier_saw(clf, ["images/another-micrograph.tif"])


def test_find_eval_folds_can_train_a_classifier_on_the_found_particles(fields, tmp_path, capsys):
    cv = tmp_path / "cv.json"
    assert main(["find-eval", str(fields), "--train-classifier", "--out", str(cv)]) == EXIT_USAGE
    assert "--folds" in capsys.readouterr().err and not cv.exists()
    assert main(["find-eval", str(fields), "--folds", "2", "--train-classifier", "--steps", "5", "--batch", "2",
                 "--crop", "64", "--out", str(cv)]) == 0
    out = capsys.readouterr().out
    assert "classifier trained on found particles" in out
    r = json.loads(cv.read_text())
    by = r["learned"]["end_to_end_by_classifier"]
    assert list(by) == ["trained on found particles"] and r["learned"]["end_to_end"] == by["trained on found particles"]
    # the classifier alone on the outlined particles: each counts once, in a fold without a classifier as missed
    perfect = by["trained on found particles"]["on_outlines"]
    assert perfect["matched_particles"] == r["learned"]["overall"]["true"]
    for fold in r["per_fold"]:
        got = fold["found_classifier"]
        assert got["context_px"] >= 2
        if "particles" in got:
            assert 0 < got["particles"] <= min(got["found"], got["outlined"])
            # its training is shown epoch by epoch, as the fold's
            assert f"fold {fold['fold']}/2  classifier on found particles: epoch 1/" in out
        else:  # a 5-step finder may find too little to train on: said, and nothing counts as classified
            assert any("no classifier could be trained" in f for f in fold["flags"])
    assert "classifier trained on found particles" in cv.with_suffix(".md").read_text()
