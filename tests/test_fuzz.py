"""Property-based tests of every parser: arbitrary or mutated input gives a result or the module's own
error type, never another exception and never unbounded memory."""
from __future__ import annotations

import io
import json
import tracemalloc

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emclassify.io import DatasetError, ImageReadError, MaskFinder, decode_image, read_manifest
from emclassify.io.images import MAX_PIXELS
from emclassify.io.tiff_fast import InflationError, decode_baseline_tiff
from emclassify.modelfile import ModelCard, ModelFileError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _tiff(arr, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


SEEDS = [
    _tiff(np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)),
    _tiff(np.arange(24 * 20, dtype=np.uint16).reshape(24, 20), compression="zlib", rowsperstrip=5),
    _tiff(np.linspace(0, 1, 30 * 30, dtype=np.float32).reshape(30, 30)),
]


@st.composite
def mutated(draw, seeds=SEEDS):
    """A valid file with some bytes overwritten, some removed, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
    return bytes(data)


def _bounded(fn, limit=64 * 2**20):
    tracemalloc.start()
    try:
        return fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < limit, f"{peak / 2**20:.0f} MiB peak"


@FUZZ
@given(st.one_of(st.binary(max_size=512), mutated()))
def test_tiff_fast_path_gives_array_none_or_its_own_error(data):
    try:
        out = _bounded(lambda: decode_baseline_tiff(data, 16384, MAX_PIXELS))
    except InflationError:
        return
    assert out is None or (isinstance(out, np.ndarray) and out.ndim == 2)


@FUZZ
@given(st.one_of(st.binary(max_size=512), mutated(), st.just(b""),
                 st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
                 st.binary(max_size=64).map(lambda b: b"\xff\xd8\xff" + b),
                 st.binary(max_size=64).map(lambda b: b"BM" + b)))
def test_image_decoding_gives_an_image_or_image_read_error(data):
    try:
        img = _bounded(lambda: decode_image("fuzz.tif", data))
    except ImageReadError as exc:
        assert exc.reason and "0x" not in exc.reason.split("(")[0][-12:]
        return
    assert img.array.ndim == 2 and img.array.dtype in (np.uint8, np.uint16, np.float32)


NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\0"),
                min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))


@FUZZ
@given(files=st.lists(NAMES, max_size=6), query=NAMES)
def test_mask_discovery_never_raises(tmp_path_factory, files, query):
    root = tmp_path_factory.mktemp("masks")
    for name in files:
        try:
            (root / name).write_bytes(b"x")
        except OSError:
            pass  # a name the file system refuses (too long, reserved): not ours to test
    found = MaskFinder(root).find(root / query)
    assert found is None or found.is_file()


CSV_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=5), max_size=6).map(
        lambda rows: "\n".join(",".join(r) for r in rows)),
    st.lists(st.tuples(NAMES, st.text(max_size=6), st.text(max_size=6)), max_size=5).map(
        lambda rows: "path,label,group\n" + "\n".join(",".join(r) for r in rows)),
)


@FUZZ
@given(text=CSV_TEXT, require_label=st.booleans())
def test_manifest_parser_gives_samples_or_dataset_error(tmp_path_factory, text, require_label):
    root = tmp_path_factory.mktemp("manifest")
    manifest = root / "manifest.csv"
    manifest.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        samples = read_manifest(manifest, require_label=require_label)
    except DatasetError as exc:
        assert str(manifest) in str(exc)
        return
    for s in samples:
        assert s.relpath and (root.resolve() in s.path.parents or s.path == root.resolve())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
VALID_CARD = {"format": "emclassify-model", "format_version": 1, "classes": ["a", "b"], "arch": "lipnet-fcn",
              "preprocess": {"mode": "crop", "size": 48, "margin": 50, "normalize": "zscore", "mean": 0.0, "std": 1.0},
              "metrics": {"validation": {"confusion_matrix": [[3, 1], [0, 4]]}}}


@st.composite
def card_dicts(draw):
    if draw(st.booleans()):
        return draw(JSON)
    card = json.loads(json.dumps(VALID_CARD))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(card) + ["preprocess.size", "preprocess.mean", "preprocess.mode",
                                                   "metrics.validation"]))
        value = draw(JSON)
        if "." in key:
            outer, inner = key.split(".")
            if isinstance(card.get(outer), dict):
                card[outer][inner] = value
        else:
            card[key] = value
    return card


@FUZZ
@given(card_dicts())
def test_card_parser_gives_a_card_or_model_file_error(d):
    try:
        card = ModelCard.from_dict(d, source="fuzz")
    except ModelFileError as exc:
        assert str(exc).startswith("fuzz:")
        return
    assert len(card.classes) >= 2 and all(isinstance(c, str) for c in card.classes)
    assert 1 <= card.preprocess.size <= 512


def test_valid_card_parses():
    assert ModelCard.from_dict(VALID_CARD).classes == ["a", "b"]


@pytest.mark.parametrize("bad", [[], None, "x", 3])
def test_card_that_is_not_an_object(bad):
    with pytest.raises(ModelFileError, match="JSON object"):
        ModelCard.from_dict(bad)
