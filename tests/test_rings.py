"""Particles found by a closed membrane ring (emclassify.finding.rings and the classical finder's use of it)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emclassify.finding import finder_from_record
from emclassify.finding.classical import ClassicalFinder
from emclassify.finding.matching import match_instances
from emclassify.finding.rings import fill_holes, ring_objects
from emclassify.synth import render_micrograph


def ring_image(rings, side=128, background=180.0, lumen=195.0, membrane=120.0, width=2.0, noise=3.0, seed=0):
    """float32 image of dark membrane rings ((cy, cx, radius) each, radii in px) around lumens brighter
    than the background, with Gaussian noise."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    img = np.full((side, side), background, np.float32)
    for cy, cx, r in rings:
        rho = np.hypot(yy - cy, xx - cx)
        img[rho < r - width] = lumen
    for cy, cx, r in rings:
        rho = np.hypot(yy - cy, xx - cx)
        img[np.abs(rho - r) <= width / 2 + 0.5] = membrane
    return img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)


def disc(side, cy, cx, r):
    yy, xx = np.mgrid[0:side, 0:side]
    return np.hypot(yy - cy, xx - cx) <= r


def test_a_membrane_around_a_bright_lumen_is_one_object_with_its_lumen():
    labels, strength = ring_objects(ring_image([(64, 64, 20)]))
    assert labels.max() == 1 and len(strength) == 1 and strength[0] > 4
    truth = disc(128, 64, 64, 21)
    iou = (truth & (labels == 1)).sum() / (truth | (labels == 1)).sum()
    assert iou > 0.85


def test_touching_rings_are_two_objects_and_nested_membranes_one():
    labels, _ = ring_objects(ring_image([(64, 42, 18), (64, 80, 19)]))   # membranes touching
    assert labels.max() == 2
    assert labels[64, 42] != labels[64, 80] and labels[64, 42] > 0 and labels[64, 80] > 0
    nested = ring_image([(64, 64, 30)])
    inner = ring_image([(64, 64, 22)], noise=0.0) - 180.0 * 0   # a second bilayer inside the first
    nested = np.minimum(nested, inner)
    labels, _ = ring_objects(nested)
    assert labels.max() == 1 and labels[64, 64] == 1


def test_a_ring_cut_by_the_edge_is_closed_by_it_and_the_open_background_is_not():
    image = ring_image([(64, 64, 20), (8, 40, 20)])     # the second ring is cut by the top edge
    labels, _ = ring_objects(image)
    assert labels.max() == 1 and labels[3, 40] == 0     # unclosed: not a ring
    labels, _ = ring_objects(image, edge_closes_up_to=60)
    assert labels.max() == 2 and labels[3, 40] > 0 and labels[3, 40] != labels[64, 64]
    assert labels[120, 120] == 0 and labels[3, 120] == 0   # the background, closed by the edge too, is larger
    cut = (labels == labels[3, 40])
    truth = disc(128, 8, 40, 21)
    assert (truth & cut).sum() / (truth | cut).sum() > 0.85
    labels, _ = ring_objects(image, edge_closes_up_to=20)   # a cut ring larger than the largest particle
    assert labels.max() == 1


def test_vesicles_cut_by_the_edge_are_found_and_nothing_else_is_lost():
    """A window of a generator field: its edges cut vesicles, most of them empty or full, which the
    ring search found only when their ring closed inside the window (BENCHMARKS.md "Rings cut by the
    micrograph's edge"); the test runs both settings."""
    m = render_micrograph("encapsulation", 92, 1, side=1024, n=24, proportions=(0.5, 0.5, 0))
    window = (slice(204, 878), slice(221, 895))
    image, truth = m.image[window], m.labels[window]
    cut = set(np.unique(np.concatenate([truth[0], truth[-1], truth[:, 0], truth[:, -1]]))) - {0}
    found, spurious = {}, {}
    for edge in (False, True):
        det = ClassicalFinder(edge_rings=edge).find(image)
        match = match_instances(det.labels, truth)
        found[edge] = {t for _, t, _ in match.pairs}
        spurious[edge] = len(det) - len(match.pairs)
    assert len(cut) >= 5
    assert len(found[True] & cut) > len(found[False] & cut)
    assert found[True] >= found[False] and spurious[True] <= spurious[False]


def test_gaps_between_packed_dark_particles_are_not_rings():
    """Between packed particles the inner edges of the particles around a gap of background close a
    'ring' too (the NanoShapes micrographs): its surroundings are as dark as its membrane."""
    side = 160
    img = np.full((side, side), 190.0, np.float32)
    for y in range(10, 150, 30):
        for x in range(10, 150, 30):
            img[y:y + 26, x:x + 26] = 90.0    # squares 26 px, gaps 4 px
    img[70:100, 70:100] = 190.0               # one particle missing: a square gap enclosed by particles
    img += np.random.default_rng(1).normal(0, 3, img.shape).astype(np.float32)
    labels, _ = ring_objects(img)
    assert labels[85, 85] == 0


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 40)),
              elements=st.floats(-1e6, 1e6, width=32)),
       st.sampled_from(["dark", "bright"]))
def test_ring_objects_takes_any_image(image, polarity):
    labels, strength = ring_objects(image, polarity)
    assert labels.shape == image.shape and labels.dtype == np.int32
    assert labels.max() == len(strength)
    assert set(np.unique(labels)) == set(range(labels.max() + 1))   # consecutive labels
    assert np.isfinite(strength).all()


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 60), st.integers(1, 60)),
              elements=st.floats(-1e6, 1e6, width=32)),
       st.sampled_from(["dark", "bright"]), st.sampled_from([5.0, 10.0, 40.0]))
def test_ring_objects_with_edges_closing_rings_takes_any_image(image, polarity, largest):
    """With rings closed by the image's edge, a region along the edge is a ring only when it is
    smaller than a particle and lies mostly along its membrane: before that rule, a 1 x 2 image was
    one ring. (A foam of membranes may tile an image: labels need not leave any 0.)"""
    labels, strength = ring_objects(image, polarity, edge_closes_up_to=largest)
    assert labels.shape == image.shape and labels.dtype == np.int32
    assert labels.max() == len(strength)
    assert set(np.unique(labels)) - {0} == set(range(1, labels.max() + 1))   # consecutive labels
    assert np.isfinite(strength).all()
    if min(image.shape) <= largest:
        np.testing.assert_array_equal(labels, ring_objects(image, polarity)[0])   # no room for a cut ring


def test_a_tiny_image_is_not_one_ring_closed_by_its_edges():
    image = np.array([[0.0, 1.0]], np.float32)
    labels, _ = ring_objects(image, edge_closes_up_to=10.0)
    assert labels.max() == 0


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.integers(0, 30), st.integers(0, 30)), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
def test_fill_holes_equals_scipy(shape, seed, share):
    """The finder fills every mask with it: holes touching the edge, diagonal-only links (holes for a
    4-connected background), empty and single-pixel masks."""
    from scipy import ndimage

    mask = np.random.default_rng(seed).random(shape) < share
    np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_empty_vesicles_among_full_ones_are_found():
    """The generator's empty vesicles (a thin membrane around a lumen brighter than the background),
    which the dark search alone never found (BENCHMARKS.md "Empty vesicles found by their membrane");
    the test runs both settings."""
    m = render_micrograph("encapsulation", 81, 0, side=1536, n=40, proportions=(0.6, 0.35, 0.05))
    empty = {p["particle"] for p in m.particles if p["label"] == "empty"}
    full = {p["particle"] for p in m.particles if p["label"] == "full"}
    found = {}
    for rings in (False, True):
        det = ClassicalFinder(find_rings=rings).find(m.image)
        found[rings] = {t for _, t, _ in match_instances(det.labels, m.labels).pairs}
    assert len(empty) >= 10
    assert len(found[False] & empty) <= 0.2 * len(empty)
    assert len(found[True] & empty) >= 0.8 * len(empty)
    assert len(found[True] & full) >= len(found[False] & full)   # nothing the dark search found is lost


def test_fields_of_noise_gain_no_rings():
    from scipy import ndimage

    for sigma in (2, 4, 8):
        noise = ndimage.gaussian_filter(np.random.default_rng(0).normal(0, 1, (512, 512)), sigma).astype(np.float32)
        det = ClassicalFinder().find(noise)
        assert not any("ring" in note for note in det.notes)


def test_a_record_from_before_rings_rebuilds_without_them():
    old = {k: v for k, v in ClassicalFinder().params().items() if k not in ("find_rings", "edge_rings")}
    assert finder_from_record(old).find_rings is False and finder_from_record(old).edge_rings is False
    before_edge = {k: v for k, v in ClassicalFinder().params().items() if k != "edge_rings"}
    assert finder_from_record(before_edge).find_rings is True and finder_from_record(before_edge).edge_rings is False
    now = finder_from_record(ClassicalFinder().params())
    assert now.find_rings is True and now.edge_rings is True
