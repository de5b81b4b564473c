"""Recording a person's review of predictions: a labelled manifest plus an audit log.

:class:`ReviewStore` writes into a destination folder of the user's choice
(never the classified folder):

- ``DEST/images/`` and ``DEST/masks/`` — a copy of each reviewed image (and its
  mask), named ``<first 12 hex digits of its SHA-256>_<file name>``, so the
  reviewed set is self-contained: it stays valid when the classified folder is
  moved or edited, and its manifest never points outside DEST (which
  :func:`emclassify.io.read_manifest` refuses by default).
- ``DEST/manifest.csv`` — ``path,label,mask,group,source``, one row per reviewed
  image, the latest decision winning; ``path``/``mask`` name the copies,
  ``source`` the original file; ``emclassify train DEST`` trains on it.
- ``DEST/review_log.csv`` — append-only audit trail: ``time_utc, user, path,
  sha256, model_sha256, predicted_class, confidence, label, action`` (action =
  ``confirm`` or ``correct``).

Both files are rewritten atomically on every decision.
"""
from __future__ import annotations

import csv
import getpass
import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from .atomic import atomic_path, write_text_atomic
from .modelfile import utc_now

MANIFEST_COLUMNS = ["path", "label", "mask", "group", "source"]
LOG_COLUMNS = ["time_utc", "user", "path", "sha256", "model_sha256", "predicted_class", "confidence", "label",
               "action"]


def _read_rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _csv(columns, rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (e.g. some containers): still record something
        return os.environ.get("USERNAME") or os.environ.get("USER") or "unknown"


class ReviewStore:
    """Labelled manifest + audit log in ``dest`` (see module doc).

    classified_root: the folder whose images are reviewed; ``dest`` must lie outside it
    (:class:`ValueError` otherwise), so a review never writes into the folder it describes.
    """

    def __init__(self, dest, user: Optional[str] = None, classified_root=None):
        self.dest = Path(dest).resolve()
        if classified_root is not None:
            root = Path(classified_root).resolve()
            if self.dest == root or root in self.dest.parents:
                raise ValueError(f"{dest}: inside the classified folder {root}; choose a labels folder outside it "
                                 "(the classified folder is never modified)")
        self.user = user or current_user()
        self.manifest = self.dest / "manifest.csv"
        self.log = self.dest / "review_log.csv"

    def _copy(self, path: Optional[Path], folder: str, sha256: str) -> str:
        """Copy ``path`` into ``DEST/<folder>/`` (once per content) and return its manifest path."""
        if path is None:
            return ""
        path = Path(path)
        sha = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
        rel = f"{folder}/{sha[:12]}_{path.name}"
        target = self.dest / rel
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
        return rel

    def labels(self) -> Dict[str, str]:
        """Current label per image reference (as written in the manifest)."""
        return {r["path"]: r["label"] for r in _read_rows(self.manifest)}

    def record(self, image: Path, label: str, *, predicted: str = "", confidence: Optional[float] = None,
               sha256: str = "", model_sha256: str = "", mask: Optional[Path] = None,
               group: Optional[str] = None) -> None:
        """Record that ``image`` is ``label`` (confirming the prediction when they agree)."""
        if not label:
            raise ValueError("a review needs a label")
        self.dest.mkdir(parents=True, exist_ok=True)
        ref = self._copy(image, "images", sha256)
        self._write(ref, self._copy(mask, "masks", ""), label, group, str(Path(image).resolve()), predicted,
                    confidence, sha256, model_sha256)

    def record_particle(self, micrograph: Path, index: int, image, mask, label: str, *, predicted: str = "",
                        confidence: Optional[float] = None, sha256: str = "", model_sha256: str = "") -> None:
        """Record a particle found in a micrograph: its crop and mask (2-D arrays, as the classifier
        saw them) are written as TIFFs, with the micrograph as ``group`` and ``micrograph#index`` as
        source. sha256: the micrograph's."""
        import tifffile

        if not label:
            raise ValueError("a review needs a label")
        micrograph = Path(micrograph)
        name = f"{(sha256 or 'nosha')[:12]}_{micrograph.stem}_p{int(index):04d}.tif"
        refs = []
        for folder, array in (("images", image), ("masks", (mask > 0).astype("uint8") * 255)):
            target = self.dest / folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tifffile.imwrite(tmp, array)
            refs.append(f"{folder}/{name}")
        self._write(refs[0], refs[1], label, micrograph.stem, f"{micrograph.resolve()}#{int(index)}", predicted,
                    confidence, sha256, model_sha256)

    def _write(self, ref: str, mask_ref: str, label: str, group: Optional[str], source: str, predicted: str,
               confidence: Optional[float], sha256: str, model_sha256: str) -> None:
        rows = {r["path"]: r for r in _read_rows(self.manifest)}
        rows[ref] = {"path": ref, "label": label, "mask": mask_ref, "group": group or "", "source": source}
        log = _read_rows(self.log)
        log.append({"time_utc": utc_now(), "user": self.user, "path": ref, "sha256": sha256,
                    "model_sha256": model_sha256, "predicted_class": predicted,
                    "confidence": "" if confidence is None else f"{confidence:.6f}", "label": label,
                    "action": "confirm" if label == predicted else "correct"})
        write_text_atomic(self.manifest, _csv(MANIFEST_COLUMNS, rows.values()))
        write_text_atomic(self.log, _csv(LOG_COLUMNS, log))
