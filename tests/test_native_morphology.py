"""The classical finder's native image-analysis ops against SciPy and scikit-image (the oracles):
reconstruction by dilation (h-maxima), the 3 x 3 median and the Euclidean distance transform must
give their results exactly."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import ndimage

from conftest import NATIVE_OP_TESTS
from emclassify import ops
from emclassify._native import native_available

pytestmark = NATIVE_OP_TESTS



def test_library_has_the_ops():
    assert native_available()
    for op in ("reconstruct_by_dilation", "median3x3", "distance_transform_edt"):
        assert hasattr(torch.ops.emclassify, op), op


shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))
dtypes = st.sampled_from([np.float32, np.float64])


@settings(max_examples=300, deadline=None)
@given(shapes, st.integers(0, 2**32 - 1), dtypes, st.integers(1, 6))
def test_reconstruction_equals_scikit_image(shape, seed, dtype, levels):
    """Few grey levels make plateaus and ties, where a queue-based algorithm goes wrong first."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, levels + 1, shape).astype(dtype)
    marker = mask - rng.integers(0, levels + 1, shape).astype(dtype)
    np.testing.assert_array_equal(ops.reconstruct_by_dilation(marker, mask, native=True),
                                  ops.reconstruct_by_dilation_reference(marker, mask))


@settings(max_examples=150, deadline=None)
@given(st.integers(8, 60), st.integers(8, 60), st.integers(0, 2**32 - 1), st.floats(0.5, 4.0))
def test_h_maxima_equals_scikit_image_on_distance_maps(h, w, seed, height):
    """The finder's use: h-maxima of the smoothed distance map of touching discs."""
    from skimage.morphology import h_maxima as skimage_h_maxima

    from emclassify.finding.classical import h_maxima

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    fg = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 6)):
        fg |= (yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2 <= rng.uniform(2, 12) ** 2
    smooth = ndimage.gaussian_filter(ndimage.distance_transform_edt(fg), 1.0)
    np.testing.assert_array_equal(h_maxima(smooth, height), skimage_h_maxima(smooth, height) != 0)


@settings(max_examples=300, deadline=None)
@given(shapes, st.integers(0, 2**32 - 1), dtypes, st.integers(1, 8))
def test_median3x3_equals_scipy(shape, seed, dtype, levels):
    """Edges (1-pixel-wide images included) and ties, float32 and float64."""
    rng = np.random.default_rng(seed)
    image = (rng.integers(0, levels + 1, shape) + rng.normal(0, 0.01, shape) * (levels % 2)).astype(dtype)
    out = ops.median3x3(image, native=True)
    assert out.dtype == image.dtype
    np.testing.assert_array_equal(out, ndimage.median_filter(image, 3))


def test_median3x3_takes_scipy_for_images_the_kernel_refuses():
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    image[1, 2] = np.nan
    np.testing.assert_array_equal(ops.median3x3(image), ndimage.median_filter(image, 3))  # NaN: reference
    ints = np.arange(20, dtype=np.uint16).reshape(4, 5)
    np.testing.assert_array_equal(ops.median3x3(ints), ndimage.median_filter(ints, 3))
    with pytest.raises(RuntimeError, match="finite"):
        ops.median3x3(image, native=True)


@settings(max_examples=400, deadline=None)
@given(shapes, st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
def test_distance_transform_equals_scipy(shape, seed, inside_share):
    """Any share of the mask inside: single rows and columns, columns without a zero pixel (the
    row pass then has gaps), a single zero; ties between equally near zeros everywhere."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < inside_share
    if mask.all():
        mask[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = False
    out = ops.distance_transform_edt(mask, native=True)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ndimage.distance_transform_edt(mask))


@settings(max_examples=40, deadline=None)
@given(st.integers(40, 300), st.integers(40, 300), st.integers(0, 2**32 - 1))
def test_distance_transform_equals_scipy_on_particles(h, w, seed):
    """The finder's use: discs and their complement, large enough to be split between threads."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    fg = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 12)):
        fg |= (yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2 <= rng.uniform(2, 40) ** 2
    for mask in (fg, ~fg):
        if not mask.all():
            np.testing.assert_array_equal(ops.distance_transform_edt(mask, native=True),
                                          ndimage.distance_transform_edt(mask))


def test_distance_transform_takes_scipy_for_masks_the_kernel_refuses():
    """No zero pixel (SciPy then measures from a pixel outside the image), empty, not 2-D, not bool."""
    for mask in (np.ones((3, 4), bool), np.ones((0, 4), bool), np.ones((2, 3, 3), bool), np.eye(4, dtype=np.uint8)):
        np.testing.assert_array_equal(ops.distance_transform_edt(mask), ndimage.distance_transform_edt(mask))
    with pytest.raises(RuntimeError, match="zero pixel"):
        ops.distance_transform_edt(np.ones((3, 4), bool), native=True)
    with pytest.raises(RuntimeError, match="2-D"):
        torch.ops.emclassify.distance_transform_edt(torch.zeros(2, 3, 3, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="bool"):
        torch.ops.emclassify.distance_transform_edt(torch.zeros(3, 3))


@pytest.mark.parametrize("seed, mask, message", [
    (np.ones((3, 3)), np.zeros((3, 3)), "must not exceed the mask"),
    (np.zeros((3, 3)), np.zeros((3, 4)), "differ in shape"),
    (np.zeros((3, 3), np.float32), np.zeros((3, 3)), "float32 or float64"),
    (np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), "2-D"),
    (np.full((3, 3), np.nan), np.zeros((3, 3)), "finite"),
])
def test_reconstruction_refuses_bad_arguments_clearly(seed, mask, message):
    with pytest.raises((RuntimeError, ValueError), match=message):
        ops.reconstruct_by_dilation(seed, mask, native=True)


def test_opcheck():
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.random((9, 7)))
    torch.library.opcheck(torch.ops.emclassify.reconstruct_by_dilation.default, (mask * 0.5, mask))
    torch.library.opcheck(torch.ops.emclassify.median3x3.default, (mask.float(),))
    torch.library.opcheck(torch.ops.emclassify.distance_transform_edt.default, (mask > 0.5,))


def test_classical_finder_finds_the_same_particles_without_the_native_ops():
    """Same labels with the native ops and with SciPy/scikit-image, on a synthetic field of touching
    vesicles; ``native`` is not a setting of the run (the same params either way)."""
    from emclassify.finding.classical import ClassicalFinder
    from emclassify.synth import render_micrograph

    image = render_micrograph("lamellarity", 3, 0, side=512, n=16).image
    native, reference = ClassicalFinder(native=True), ClassicalFinder(native=False)
    assert native.params() == reference.params() and "native" not in native.params()
    native, reference = native.find(image), reference.find(image)
    assert len(native) >= 8
    np.testing.assert_array_equal(native.labels, reference.labels)
