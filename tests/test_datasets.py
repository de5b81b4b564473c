"""Dataset layouts (manifest, class folders), mask discovery, unlabelled folder listing."""
from __future__ import annotations

import numpy as np
import pytest

from emclassify.io import DatasetError, list_images, load_dataset

from conftest import write_tiff

IMG = np.full((6, 6), 100, np.uint8)


def test_class_folders_with_all_three_mask_conventions(tmp_path):
    write_tiff(tmp_path / "uni" / "a.tif", IMG)
    write_tiff(tmp_path / "masks" / "uni" / "a.tif", IMG)          # parallel masks/ tree
    write_tiff(tmp_path / "uni" / "b.tif", IMG)
    write_tiff(tmp_path / "uni" / "b_mask.tif", IMG)               # sibling _mask
    write_tiff(tmp_path / "multi" / "deep" / "c.tif", IMG)         # no mask, nested
    ds = load_dataset(tmp_path)
    assert ds.source == "folders"
    assert ds.classes == ["multi", "uni"]
    by_name = {s.relpath: s for s in ds.samples}
    assert set(by_name) == {"uni/a.tif", "uni/b.tif", "multi/deep/c.tif"}  # masks are not samples
    assert by_name["uni/a.tif"].mask == tmp_path / "masks" / "uni" / "a.tif"
    assert by_name["uni/b.tif"].mask == tmp_path / "uni" / "b_mask.tif"
    assert by_name["multi/deep/c.tif"].mask is None
    assert ds.labels == [0, 1, 1]


def test_manifest_with_mask_and_group_columns(tmp_path):
    write_tiff(tmp_path / "x" / "1.tif", IMG)
    write_tiff(tmp_path / "x" / "2.tif", IMG)
    write_tiff(tmp_path / "m" / "1.tif", IMG)
    (tmp_path / "list.csv").write_text("path,label,mask,group\nx/1.tif,full,m/1.tif,g1\nx/2.tif,empty,,g2\n")
    ds = load_dataset(tmp_path / "list.csv")
    assert ds.source == "manifest" and ds.classes == ["empty", "full"]
    assert [s.group for s in ds.samples] == ["g1", "g2"]
    assert ds.samples[0].mask == (tmp_path / "m" / "1.tif").resolve()
    assert ds.samples[1].mask is None and ds.has_groups


def test_folder_with_manifest_uses_it(tmp_path):
    write_tiff(tmp_path / "anything" / "1.tif", IMG)
    (tmp_path / "manifest.csv").write_text("path,label\nanything/1.tif,cls\n")
    ds = load_dataset(tmp_path)
    assert ds.source == "manifest" and ds.classes == ["cls"]


def test_manifest_errors_name_file_and_problem(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,class\na.tif,x\n")
    with pytest.raises(DatasetError, match="lacks column"):
        load_dataset(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label\nmissing.tif,x\n")
    with pytest.raises(DatasetError, match="not found: missing.tif"):
        load_dataset(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label\nmissing.tif,\n")
    with pytest.raises(DatasetError, match="line 2: empty label"):
        load_dataset(tmp_path)


def test_empty_and_missing_sources(tmp_path):
    with pytest.raises(DatasetError, match="no labelled images"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset(tmp_path / "nope")


def test_list_images_recursive_sorted_masks_excluded(tmp_path):
    for rel in ["b/z.tif", "a/Y.png", "a/x.tif", "a/x_mask.tif", "masks/a/q.tif", "top.bmp"]:
        write_tiff(tmp_path / rel, IMG) if rel.endswith(".tif") else _png(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".hidden.tif").write_bytes(b"x")
    listing = list_images(tmp_path)
    assert [s.relpath for s in listing.samples] == ["a/x.tif", "a/Y.png", "b/z.tif", "top.bmp"]
    assert listing.ignored == ["notes.txt"]
    assert listing.samples[0].mask == tmp_path / "a" / "x_mask.tif"


def test_list_images_finds_masks_of_synth_layout(tmp_path):
    write_tiff(tmp_path / "images" / "c" / "p.tif", IMG)
    write_tiff(tmp_path / "masks" / "c" / "p.tif", IMG)
    listing = list_images(tmp_path)
    assert [s.relpath for s in listing.samples] == ["images/c/p.tif"]
    assert listing.samples[0].mask == tmp_path / "masks" / "c" / "p.tif"


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(IMG).save(path)


def test_nanoshapes_loads_as_is(nanoshapes):
    ds = load_dataset(nanoshapes)
    assert len(ds) == 3182
    assert ds.classes == ["Cube", "Octahedron", "Sphere"]
    assert ds.class_counts() == {"Cube": 1185, "Octahedron": 745, "Sphere": 1252}
    assert all(s.mask is not None and s.mask.is_file() for s in ds.samples)
    assert len({s.group for s in ds.samples}) == 31


def test_nanoshapes_folder_listing_excludes_masks(nanoshapes):
    listing = list_images(nanoshapes / "images" / "Cube")
    assert len(listing.samples) == 1185 and not listing.ignored


def test_class_order_declared_by_classes_txt(tmp_path):
    for label in ("zeta", "alpha"):
        write_tiff(tmp_path / label / "x.tif", IMG)
    assert load_dataset(tmp_path).classes == ["alpha", "zeta"]
    (tmp_path / "classes.txt").write_text("# order of the lab's protocol\nzeta\nalpha\nunused\n")
    ds = load_dataset(tmp_path)
    assert ds.classes == ["zeta", "alpha"] and ds.class_order == "declared in classes.txt"
    (tmp_path / "classes.txt").write_text("zeta\n")
    with pytest.raises(DatasetError, match="alpha are used but not listed"):
        load_dataset(tmp_path)


def test_groups_only_when_every_sample_has_one(tmp_path):
    for i in range(4):
        write_tiff(tmp_path / f"{i}.tif", IMG)
    (tmp_path / "manifest.csv").write_text("path,label,group\n0.tif,a,g1\n1.tif,b,g1\n2.tif,a,\n3.tif,b,g2\n")
    ds = load_dataset(tmp_path)
    assert not ds.has_groups
    assert any("NOT be group-aware" in w for w in ds.warnings)
    (tmp_path / "manifest.csv").write_text("path,label,group\n0.tif,a,g1\n1.tif,b,g1\n2.tif,a,g3\n3.tif,b,g2\n")
    assert load_dataset(tmp_path).has_groups
