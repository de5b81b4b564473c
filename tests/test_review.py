"""Recording reviews: the labels folder never lies inside the classified folder."""
from __future__ import annotations

import numpy as np
import pytest

from emclassify.io import load_dataset
from emclassify.review import ReviewStore

from conftest import write_tiff


def test_review_store_refuses_a_folder_inside_the_classified_one(tmp_path):
    root = tmp_path / "classified"
    write_tiff(root / "a.tif", np.zeros((16, 16), np.uint8))
    for inside in (root, root / "labels"):
        with pytest.raises(ValueError, match="inside the classified folder"):
            ReviewStore(inside, classified_root=root)
    store = ReviewStore(tmp_path / "labels", user="tester", classified_root=root)
    store.record(root / "a.tif", "x", predicted="y", confidence=0.4)
    assert list(root.iterdir()) == [root / "a.tif"]  # nothing written beside the image
    ds = load_dataset(tmp_path / "labels")
    assert [s.label for s in ds.samples] == ["x"]
