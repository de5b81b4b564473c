"""Finding particle images, their labels, masks and groups on disk.

Two labelled layouts (:func:`load_dataset`):

- **manifest**: a CSV with columns ``path,label[,mask][,group]`` (paths relative
  to the CSV; extra columns ignored). ``ROOT/manifest.csv`` is used when present.
- **class folders**: ``ROOT/<class>/**/*.tif`` (or ``ROOT/images/<class>/...``),
  one folder per class.

Unlabelled folders (:func:`list_images`, for ``batch``): every image file under
the folder, recursively, mask files excluded, in a stable (sorted) order.

Masks (:class:`MaskFinder`), first match wins: the manifest's ``mask`` column;
a parallel tree ``ROOT/masks/<same relative path>`` (for ``ROOT/images/<rel>``
also ``ROOT/masks/<rel>``); a sibling ``<name>_mask.<any image ext>``.

Walking folders (:func:`walk_files`): symbolic links to files and folders are
followed, each real folder visited once (a link loop is reported, not followed
forever); broken links, folders named like images and special files (devices,
pipes) are reported with a reason. Manifest paths must stay inside the
manifest's folder unless ``allow_outside=True`` (shared network layouts).

Paths in records: a relative path that is not valid UTF-8 (possible on Linux)
is written with Python's ``backslashreplace`` escaping of the undecodable bytes,
e.g. ``bad\xffname.tif`` (:func:`record_path`); the file itself is still read.
"""
from __future__ import annotations

import csv
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from .images import IMAGE_EXTENSIONS, is_image_file

MANIFEST_NAME = "manifest.csv"
MASK_DIR = "masks"
IMAGE_DIR = "images"
MASK_SUFFIX = "_mask"


class DatasetError(Exception):
    """A dataset that cannot be loaded; the message says which file and why."""


@dataclass(frozen=True)
class Sample:
    """One particle image on disk.

    path: absolute image path. label: class name or None (unlabelled).
    mask: absolute mask path or None. group: e.g. source micrograph, or None.
    relpath: POSIX path relative to the dataset root (what reports show).
    """

    path: Path
    relpath: str
    label: Optional[str] = None
    mask: Optional[Path] = None
    group: Optional[str] = None


@dataclass
class Dataset:
    """A labelled set of particle images.

    classes: class names in label-index order: as declared in ``classes.txt`` when the dataset has one,
    else sorted; this order is the model's output order, the card's, the CSV's and the reports'.
    samples: in stable order.
    """

    root: Path
    samples: List[Sample]
    classes: List[str]
    source: str  # "manifest" | "folders"
    warnings: List[str] = field(default_factory=list)
    class_order: str = "sorted by name (no classes.txt)"

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> List[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[s.label] for s in self.samples]

    @property
    def groups(self) -> List[Optional[str]]:
        return [s.group for s in self.samples]

    @property
    def has_groups(self) -> bool:
        """True when *every* sample has a group. The one group policy: splits (train's validation
        split, CV folds) are group-aware exactly when this is true, and reports say so; a dataset
        where only some samples have a group gets a warning at load and plain stratified splits."""
        return bool(self.samples) and all(s.group for s in self.samples)

    def class_counts(self) -> Dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for s in self.samples:
            counts[s.label] += 1
        return counts

    def fingerprint(self) -> str:
        """SHA-256 over (relative path, label, file size) of every sample: cheap, order-independent."""
        h = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: s.relpath):
            size = s.path.stat().st_size if s.path.exists() else -1
            h.update(f"{s.relpath}\t{s.label}\t{size}\n".encode())
        return h.hexdigest()


def sort_key(relpath: str):
    """The stable order used for every listing (case-insensitive path parts, then exact)."""
    return tuple(p.casefold() for p in PurePosixPath(relpath).parts), relpath


def record_path(relpath: str) -> str:
    """``relpath`` as written into CSVs and reports: undecodable file-name bytes as ``\\xNN`` escapes."""
    try:
        relpath.encode("utf-8")
        return relpath
    except UnicodeEncodeError:
        return relpath.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def has_undecodable_name(path) -> bool:
    """True when the file name is not valid UTF-8 (its record path carries escapes)."""
    try:
        str(path).encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _rel(path: Path, root: Path) -> str:
    return record_path(path.relative_to(root).as_posix())


def walk_files(folder: Path) -> Iterator[Tuple[Path, Optional[str]]]:
    """Every file under ``folder`` as ``(path, None)``, or ``(path, reason)`` for entries that cannot be
    read as files (broken link, link loop, folder named like an image, device/pipe). Hidden entries
    (a name starting with ".") are passed over. Order: unspecified (callers sort).
    """
    root = Path(folder)
    seen = set()

    def visit(d: Path):
        try:
            st = d.stat()
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            yield d, "symbolic link loop (folder already visited); not followed again"
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            yield d, f"cannot list folder: {exc.strerror or exc}"
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                st = os.stat(p)  # follows links
            except FileNotFoundError:
                yield p, "broken symbolic link (its target does not exist)"
                continue
            except OSError as exc:
                yield p, f"cannot read: {exc.strerror or exc}"
                continue
            if stat.S_ISDIR(st.st_mode):
                if is_image_file(p):
                    yield p, "a folder named like an image file; its contents are listed separately"
                yield from visit(p)
            elif stat.S_ISREG(st.st_mode):
                yield p, None
            elif is_image_file(p):
                yield p, "not a regular file (a device, pipe or socket)"

    yield from visit(root)


def is_mask_path(relpath: str) -> bool:
    """True for files that are masks by convention: under ``masks/`` or named ``*_mask.*``."""
    p = PurePosixPath(relpath)
    return MASK_DIR in p.parts[:-1] or p.stem.lower().endswith(MASK_SUFFIX)


class MaskFinder:
    """Finds the mask of an image under ``root`` by the conventions in the module doc.

    ``manifest_masks`` maps image relpath -> mask Path (from a manifest), if any.
    """

    def __init__(self, root: Path, manifest_masks: Optional[Dict[str, Path]] = None):
        self.root = Path(root)
        self.manifest_masks = manifest_masks or {}
        self.mask_root = self.root / MASK_DIR
        self._has_mask_tree = self.mask_root.is_dir()

    def find(self, image: Path) -> Optional[Path]:
        image = Path(image)
        try:
            rel = _rel(image, self.root)
        except ValueError:
            rel = None
        if rel is not None and rel in self.manifest_masks:
            return self.manifest_masks[rel]
        if rel is not None and self._has_mask_tree:
            parts = PurePosixPath(rel).parts
            candidates = [self.mask_root.joinpath(*parts)]
            if len(parts) > 1 and parts[0] == IMAGE_DIR:
                candidates.append(self.mask_root.joinpath(*parts[1:]))
            for c in candidates:
                if c.is_file():
                    return c
        for ext in dict.fromkeys((image.suffix,) + IMAGE_EXTENSIONS):
            c = image.with_name(image.stem + MASK_SUFFIX + ext)
            if c.is_file():
                return c
        return None


MAX_MANIFEST_BYTES = 256 * 2**20


def read_manifest(csv_path: Path, require_label: bool = True, allow_outside: bool = False) -> List[Sample]:
    """Parse a manifest CSV (``path,label[,mask][,group]``), paths relative to it.

    allow_outside: accept image/mask paths outside the manifest's folder (``../``, absolute);
    refused by default so a manifest cannot make a run read arbitrary files.
    """
    csv_path = Path(csv_path)
    root = csv_path.parent
    resolved_root = root.resolve()
    try:
        if csv_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise DatasetError(f"{csv_path}: manifest is larger than {MAX_MANIFEST_BYTES // 2**20} MiB")
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot read manifest: {exc.strerror or exc}") from None
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = cols
            missing = [c for c in (("path", "label") if require_label else ("path",)) if c not in cols]
            if missing:
                raise DatasetError(
                    f"{csv_path}: manifest lacks column(s) {', '.join(missing)} "
                    f"(expected path,label[,mask][,group]; found {', '.join(cols) or 'none'})"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: cannot read manifest: {exc}") from None
    except ValueError as exc:  # e.g. NUL characters
        raise DatasetError(f"{csv_path}: not a readable CSV manifest: {exc}") from None

    def inside(rel: str, what: str, lineno: int) -> Path:
        # Lexical containment (``..`` and absolute paths), not resolved: a symbolic link inside the
        # dataset folder is the lab's own layout and stays allowed.
        lexical = Path(os.path.normpath(resolved_root / rel))
        path = (root / rel).resolve()
        if not allow_outside and not _is_under(lexical, resolved_root):
            raise DatasetError(
                f"{csv_path}, line {lineno}: {what} path {rel!r} points outside the manifest's folder; "
                "refused (allow it explicitly with --allow-outside-paths for shared layouts)")
        return path

    samples = []
    for lineno, row in enumerate(rows, start=2):
        rel = (row.get("path") or "").strip()
        if not rel:
            raise DatasetError(f"{csv_path}, line {lineno}: empty path")
        label = (row.get("label") or "").strip() or None
        if require_label and label is None:
            raise DatasetError(f"{csv_path}, line {lineno}: empty label for {rel}")
        mask_rel = (row.get("mask") or "").strip()
        group = (row.get("group") or "").strip() or None
        if "\x00" in rel or "\x00" in mask_rel:
            raise DatasetError(f"{csv_path}, line {lineno}: a path contains a NUL character")
        path = inside(rel, "image", lineno)
        samples.append(
            Sample(
                path=path,
                relpath=PurePosixPath(rel).as_posix(),
                label=label,
                mask=inside(mask_rel, "mask", lineno) if mask_rel else None,
                group=group,
            )
        )
    return samples


def _class_folder_root(root: Path) -> Path:
    images = root / IMAGE_DIR
    return images if images.is_dir() else root


def load_dataset(source, find_masks: bool = True, allow_outside: bool = False) -> Dataset:
    """Load a labelled dataset from a manifest CSV or a folder.

    ``source``: a ``.csv`` manifest, or a folder holding ``manifest.csv`` (used
    when present) or one sub-folder per class. Missing image files listed in a
    manifest are an error naming them; a dataset needs at least one sample.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        manifest, root = source, source.parent
    elif source.is_dir():
        root = source
        manifest = source / MANIFEST_NAME if (source / MANIFEST_NAME).is_file() else None
    else:
        raise DatasetError(f"{source}: no such folder or manifest CSV")
    root = root.resolve()

    notes: List[str] = []
    if manifest is not None:
        samples = read_manifest(manifest, allow_outside=allow_outside)
        missing = [s.relpath for s in samples if not s.path.is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DatasetError(f"{manifest}: {len(missing)} listed image(s) not found: {shown}")
        if find_masks:
            finder = MaskFinder(root)
            samples = [s if s.mask else _with_mask(s, finder.find(s.path)) for s in samples]
        kind = "manifest"
    else:
        class_root = _class_folder_root(root)
        class_dirs = sorted(
            (d for d in class_root.iterdir() if d.is_dir() and d.name != MASK_DIR and not d.name.startswith(".")),
            key=lambda d: d.name,
        )
        finder = MaskFinder(root) if find_masks else None
        samples = []
        for d in class_dirs:
            for f in _walk_images(d):
                rel = _rel(f, root)
                if is_mask_path(_rel(f, class_root)):
                    continue
                samples.append(Sample(path=f, relpath=rel, label=d.name, mask=finder.find(f) if finder else None))
        empty = [d.name for d in class_dirs if not any(s.label == d.name for s in samples)]
        if empty:
            notes.append(f"class folder(s) without images ignored: {', '.join(empty)}")
        kind = "folders"
    if not samples:
        raise DatasetError(
            f"{source}: no labelled images found (expected manifest.csv or one sub-folder per class "
            f"holding {', '.join(IMAGE_EXTENSIONS)} files)"
        )
    n_grouped = sum(1 for s in samples if s.group)
    if 0 < n_grouped < len(samples):
        notes.append(f"{len(samples) - n_grouped} of {len(samples)} samples have no group: splits will NOT be "
                     "group-aware (give every sample a group, e.g. its micrograph, to keep groups apart)")
    classes, order_source = _class_order(root, {s.label for s in samples})
    samples.sort(key=lambda s: sort_key(s.relpath))
    return Dataset(root=root, samples=samples, classes=classes, source=kind, warnings=notes,
                   class_order=order_source)


CLASSES_FILE = "classes.txt"


def _class_order(root: Path, labels) -> Tuple[List[str], str]:
    """The dataset's class order: as declared in ``ROOT/classes.txt`` (one name per line; every label
    must be listed, listed classes without images are kept), else sorted by name."""
    declared = root / CLASSES_FILE
    if declared.is_file():
        try:
            names = [ln.strip() for ln in declared.read_text(encoding="utf-8-sig").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{declared}: cannot read: {exc}") from None
        names = [n for n in names if n and not n.startswith("#")]
        if len(set(names)) != len(names):
            raise DatasetError(f"{declared}: a class is listed twice")
        missing = sorted(set(labels) - set(names))
        if missing:
            raise DatasetError(f"{declared}: labels {', '.join(missing)} are used but not listed")
        return [n for n in names if n in labels], f"declared in {CLASSES_FILE}"
    return sorted(labels), "sorted by name (no classes.txt)"


def _with_mask(sample: Sample, mask: Optional[Path]) -> Sample:
    return Sample(sample.path, sample.relpath, sample.label, mask, sample.group)


def _walk_images(folder: Path) -> Iterable[Path]:
    for f, problem in walk_files(folder):
        if problem is None and is_image_file(f):
            yield f


@dataclass
class FolderListing:
    """Unlabelled images under a folder, for ``batch``.

    samples: images (mask files excluded), sorted by relative path, masks attached.
    ignored: relative paths of non-image files that were skipped (reported, not silent).
    unreadable: ``(relative path, reason)`` of entries that are not readable files: broken
    links, link loops, folders named like images, devices (reported, not silent).
    """

    root: Path
    samples: List[Sample]
    ignored: List[str]
    unreadable: List[Tuple[str, str]] = field(default_factory=list)


def list_images(folder, find_masks: bool = True, allow_outside: bool = False) -> FolderListing:
    """Every image file under ``folder`` (recursive), mask files excluded, sorted.

    Masks are attached by :class:`MaskFinder` (a ``manifest.csv`` in the folder
    contributes its ``mask`` column and ``group``s but is not required).
    """
    root = Path(folder).resolve()
    if not root.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    manifest_masks: Dict[str, Path] = {}
    groups: Dict[str, str] = {}
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        for s in read_manifest(manifest, require_label=False, allow_outside=allow_outside):
            if s.mask:
                manifest_masks[s.relpath] = s.mask
            if s.group:
                groups[s.relpath] = s.group
    listed_masks = {_rel(m, root) for m in manifest_masks.values() if _is_under(m, root)}
    finder = MaskFinder(root, manifest_masks) if find_masks else None
    samples, ignored, unreadable = [], [], []
    for f, problem in walk_files(root):
        rel = _rel(f, root)
        if problem is not None:
            unreadable.append((rel, problem))
            continue
        if not is_image_file(f):
            if rel != MANIFEST_NAME:
                ignored.append(rel)
            continue
        if is_mask_path(rel) or rel in listed_masks:
            continue
        samples.append(Sample(path=f, relpath=rel, mask=finder.find(f) if finder else None, group=groups.get(rel)))
    samples.sort(key=lambda s: sort_key(s.relpath))
    ignored.sort(key=sort_key)
    unreadable.sort(key=lambda item: sort_key(item[0]))
    return FolderListing(root=root, samples=samples, ignored=ignored, unreadable=unreadable)


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


__all__ = [
    "Dataset",
    "DatasetError",
    "FolderListing",
    "MaskFinder",
    "Sample",
    "is_mask_path",
    "list_images",
    "load_dataset",
    "read_manifest",
    "record_path",
    "sort_key",
    "walk_files",
]
