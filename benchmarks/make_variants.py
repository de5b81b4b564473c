"""Variants of the NanoShapes particle set for the trust benchmarks (BENCHMARKS.md, "Data nobody here prepared").

    python benchmarks/make_variants.py ../shared/data/nanoshapes OUT

writes (nothing is copied into the repository; images are symlinked or re-encoded under OUT):

- ``OUT/nomask/``: the same particles without masks (manifest without the mask column, no masks/);
- ``OUT/small41/``: each particle's box (manifest columns particle_x0..y1) resized to 41x41 px, no
  mask and no surround — the shape of small public particle sets;
- ``OUT/split/train`` and ``OUT/split/test``: the particles of 24 micrographs and of the other 7
  (whole micrographs held out), with masks.
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from emclassify.io import read_image


def _rows(src: Path):
    with open(src / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _write_manifest(path: Path, rows, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def nomask(src: Path, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "images").exists():
        os.symlink((src / "images").resolve(), out / "images")
    _write_manifest(out / "manifest.csv", _rows(src), ["path", "label", "group"])


def small41(src: Path, out: Path, side: int = 41):
    rows = []
    for r in _rows(src):
        img = read_image(src / r["path"]).array
        x0, y0, x1, y1 = (int(r[k]) for k in ("particle_x0", "particle_y0", "particle_x1", "particle_y1"))
        box = img[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)].astype(np.float32)
        lo, hi = float(box.min()), float(box.max())
        u8 = np.clip((box - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        rel = Path(r["path"]).with_suffix(".png").as_posix()
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(u8).resize((side, side), Image.BILINEAR).save(dst)
        rows.append({"path": rel, "label": r["label"], "group": r["group"]})
    _write_manifest(out / "manifest.csv", rows, ["path", "label", "group"])


def split(src: Path, out: Path, n_test_groups: int = 7, seed: int = 0):
    rows = _rows(src)
    groups = sorted({r["group"] for r in rows})
    rng = np.random.default_rng(seed)
    test = set(rng.choice(groups, size=n_test_groups, replace=False).tolist())
    for name, keep in (("train", lambda g: g not in test), ("test", lambda g: g in test)):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for sub in ("images", "masks"):
            if not (d / sub).exists():
                os.symlink((src / sub).resolve(), d / sub)
        _write_manifest(d / "manifest.csv", [r for r in rows if keep(r["group"])], ["path", "mask", "label", "group"])
    (out / "test_groups.txt").write_text("\n".join(sorted(test)) + "\n")


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    nomask(src, out / "nomask")
    small41(src, out / "small41")
    split(src, out / "split")
    print(f"wrote {out}/nomask, {out}/small41, {out}/split/{{train,test}}")


if __name__ == "__main__":
    main()
