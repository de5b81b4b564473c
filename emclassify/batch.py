"""``emclassify batch``: classify a folder into a CSV lab record plus a summary.

:func:`run_batch` is the whole job behind the CLI command (and usable from
Python). While it runs, rows are appended to ``<csv>.partial`` after every batch,
so an interrupted or killed run loses at most one batch and ``resume=True``
continues from it. At the end (also after Ctrl-C or cancel) the CSV and
``<csv stem>.summary.json`` are written atomically and the partial file removed.

What ``resume`` checks (and refuses with exit 4 otherwise): the partial file's run
record (``<csv>.partial.json``, written before the first row) and the finished
run's summary name the same model (SHA-256 of the model file) and the same folder
as this run; a file whose SHA-256 changed since its row was written is classified
again, a row whose file is gone is dropped, and rows in error before the file
could be read are retried. Only one run writes an output at a time: a lock file
``<csv>.lock`` holds the writer's process id, and a lock left by a dead process is
taken over.

Exit codes (:data:`EXIT_CODES`): 0 all files classified; 3 some files in error
(they are listed in the CSV); 4 nothing could run (bad model, missing or empty
folder, CSV of another model); 130 interrupted (results so far are kept).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ._native import backend_description
from ._version import __version__
from .assets import default_model_path
from .events import BatchClassified, BatchStarted, Progress, emit
from .inference import (DEFAULT_BATCH_SIZE, BatchResult, CancelToken, Classifier, FileResult, classify_folder,
                        region_fell_back)
from .contrast import card_polarity, has_other_contrast_note
from .input_decision import trained_on_masks
from .segment import MASK_CHECKS, mask_problem
from .atomic import write_bytes_atomic, write_text_atomic
from .io import IMAGE_EXTENSIONS, DatasetError, FolderListing, list_images
from .modelfile import ModelFileError, file_sha256, load_model, software_versions, utc_now
from .prevalence import adjusted_prevalence, card_confusion
from .runtime import reuse_freed_memory
from .reports import (
    ReportError,
    class_summary,
    csv_columns,
    micrograph_csv_text,
    read_csv,
    row_key,
    row_values,
    summary_path_for,
    write_csv,
    write_json,
)

SIZE_NOTE = "the model was trained on images of about"  # in a row's warnings (inference.size_warning)

from .defaults import (EXIT_CODES, EXIT_INTERRUPTED, EXIT_NOTHING_RAN, EXIT_OK,  # noqa: E402,F401 - re-exported
                       EXIT_SOME_ERRORS)


class BatchError(Exception):
    """The run could not start; the message says what to fix."""


@dataclass
class BatchOutcome:
    csv_path: Path
    summary_path: Path
    summary: Dict
    results: List[FileResult]
    exit_code: int


def default_output(folder) -> Path:
    """Where the CSV goes without ``--out``: ``./<folder name>.emclassify.csv``, or beside the folder
    (``<folder>/../<folder name>.emclassify.csv``) when the working directory is inside it, so the
    record is never written into the folder it describes."""
    root = Path(folder).resolve()
    cwd = Path.cwd().resolve()
    where = root.parent if cwd == root or root in cwd.parents else cwd
    return where / f"{root.name}.emclassify.csv"


def histogram_path_for(csv_path) -> Path:
    """The per-class diameter histogram written beside the summary: ``<csv stem>.sizes.png``."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".sizes.png")


def micrographs_path_for(csv_path) -> Path:
    """The per-micrograph table of a micrograph run, as CSV beside the summary: ``<csv stem>.micrographs.csv``."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".micrographs.csv")


def partial_path_for(csv_path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name + ".partial")


def run_record_path_for(csv_path) -> Path:
    """The partial file's identity: model SHA-256, folder and classes of the run that writes it."""
    p = Path(csv_path)
    return p.with_name(p.name + ".partial.json")


def lock_path_for(csv_path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name + ".lock")


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(csv_path: Path):
    """Hold ``<csv>.lock`` while a run writes ``csv_path``; refuse when a live process holds it.

    A lock of a process that no longer runs (killed run) is taken over. A lock taken on another
    host (shared drive) cannot be checked and is respected: the message says how to clear it.
    """
    lock = lock_path_for(csv_path)
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text(encoding="utf-8").strip().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):
                pid, host = -1, ""
            if host and host != socket.gethostname():
                raise BatchError(f"{csv_path}: another emclassify run on {host} (process {pid}) is writing "
                                 f"this output; if it is no longer running, delete {lock}") from None
            if _process_alive(pid):
                raise BatchError(f"{csv_path}: another emclassify run (process {pid}) is writing this output; "
                                 "wait for it or choose another --out") from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)  # stale: its process is gone
            continue
        except OSError as exc:
            raise BatchError(f"{csv_path}: cannot write output: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(me + "\n")
        break
    else:
        raise BatchError(f"{csv_path}: cannot take the output lock {lock}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text(encoding="utf-8").strip() == me:
                os.unlink(lock)


def check_output(csv_path: Path) -> None:
    """Refuse an output path that cannot take a CSV, before any work is done."""
    for p in (csv_path, summary_path_for(csv_path), micrographs_path_for(csv_path), histogram_path_for(csv_path)):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BatchError(f"{p}: cannot use as output: {exc.strerror or exc}") from None
        if stat.S_ISDIR(st.st_mode):
            if p != csv_path:   # a file the run writes beside the CSV
                raise BatchError(f"{p}: is a folder, where this run writes a file beside {csv_path.name}; "
                                 "move it or choose another --out")
            raise BatchError(f"{p}: is a folder; --out must name a CSV file, e.g. {p / 'results.emclassify.csv'}")
        if not stat.S_ISREG(st.st_mode):
            raise BatchError(f"{p}: is not a regular file (a device or pipe); --out must name a CSV file")
    parent = csv_path.parent
    if parent.exists() and not parent.is_dir():
        raise BatchError(f"{csv_path}: {parent} is not a folder")


def _run_identity(trained, folder: Path, finding: Optional[Dict] = None) -> Dict:
    """What a resumed run must share with the one that wrote the record: model, folder and, for
    micrographs, the finder with its settings and any pixel-size override."""
    identity = {"model_sha256": trained.sha256, "folder": str(folder), "classes": list(trained.card.classes)}
    if finding is not None:
        identity["finding"] = finding
    return identity


def _finding_identity(finding):
    """The finder settings a resumed run must share: a learned finder's model by its SHA-256, not by
    where the file lies (moving it does not make it another finder), and its views and polarity (a
    record from before these existed ran the plain maps, 1, and the contrast the finder learnt, None)."""
    if isinstance(finding, dict) and finding.get("model_sha256"):
        return {"views": 1, "polarity": None, **{k: v for k, v in finding.items() if k != "model"}}
    return finding


def _check_same_run(source: Path, recorded: Dict, identity: Dict) -> None:
    if recorded.get("model_sha256") != identity["model_sha256"]:
        sha = str(recorded.get("model_sha256") or "unknown")
        raise BatchError(f"{source}: written with another model (sha256 {sha[:12]}…, this model "
                         f"{identity['model_sha256'][:12]}…); resume with that model, choose another --out, "
                         "or drop --resume to start over")
    if recorded.get("folder") != identity["folder"]:
        raise BatchError(f"{source}: written for folder {recorded.get('folder')!r}, not {identity['folder']!r}; "
                         "choose another --out, or drop --resume to start over")
    if _finding_identity(recorded.get("finding")) != _finding_identity(identity.get("finding")):
        def what(f):
            return "particle images" if not f else f"micrographs ({json.dumps(f, sort_keys=True)})"
        raise BatchError(f"{source}: written for {what(recorded.get('finding'))}, this run classifies "
                         f"{what(identity.get('finding'))}; use the same settings, choose another --out, or "
                         "drop --resume to start over")


def _read_json_dict(path: Path) -> Optional[Dict]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return d if isinstance(d, dict) else None


def _load_previous(csv_path: Path, classes, identity: Dict) -> List[FileResult]:
    """Rows of an earlier run of the same model on the same folder (final CSV and/or partial file)."""
    partial = partial_path_for(csv_path)
    sources = []
    if csv_path.is_file():
        summary = _read_json_dict(summary_path_for(csv_path))
        if summary is None:
            raise BatchError(f"{csv_path}: its summary {summary_path_for(csv_path).name} is missing or unreadable, "
                             "so the model and folder that wrote it cannot be checked; drop --resume to start over")
        model = summary.get("model") if isinstance(summary.get("model"), dict) else {}
        _check_same_run(csv_path, {"model_sha256": model.get("sha256"), "folder": summary.get("folder"),
                                   "finding": summary.get("finding")}, identity)
        sources.append(csv_path)
    if partial.is_file():
        record = _read_json_dict(run_record_path_for(csv_path))
        if record is None:
            raise BatchError(f"{partial}: its run record {run_record_path_for(csv_path).name} is missing or "
                             "unreadable, so the model that wrote it cannot be checked; drop --resume to start over")
        _check_same_run(partial, record, identity)
        sources.append(partial)
    rows: Dict[str, List[FileResult]] = {}  # by file: a later source replaces all of a file's rows
    for source in sources:
        try:
            read = read_csv(source, classes)
        except ReportError as exc:
            raise BatchError(str(exc)) from None
        if source == partial and identity.get("finding") is not None and read:
            # The partial file is written micrograph by micrograph; its last micrograph may have been
            # cut short mid-way (a killed run), so it is classified again.
            last = read[-1].path
            read = [r for r in read if r.path != last]
        fresh: Dict[str, Dict[tuple, FileResult]] = {}
        for r in read:
            fresh.setdefault(r.path, {})[row_key(r)] = r
        rows.update({path: list(by_key.values()) for path, by_key in fresh.items()})
    return [r for path_rows in rows.values() for r in path_rows]


def _still_valid(previous: List[FileResult], listing: FolderListing) -> tuple:
    """Earlier rows still true of the folder, and counts of what must be redone.

    A row is kept when its file is still listed and its SHA-256 is unchanged; rows whose
    file could not even be read (no SHA-256) are retried; rows of files now gone are dropped.
    """
    by_path = {s.relpath: s for s in listing.samples}
    kept, changed, gone, retried = [], 0, 0, 0
    unchanged: Dict[str, bool] = {}  # a micrograph's rows share one file: hash it once
    for r in previous:
        sample = by_path.get(r.path)
        if sample is None:
            gone += 1
        elif not r.sha256:
            retried += 1
        else:
            if r.path not in unchanged:
                try:
                    unchanged[r.path] = file_sha256(sample.path) == r.sha256
                except OSError:
                    unchanged[r.path] = False
            if unchanged[r.path]:
                kept.append(r)
            else:
                changed += 1
    return kept, {"kept": len(kept), "changed_reclassified": changed, "gone_dropped": gone,
                  "unread_retried": retried}


def build_summary(
    *,
    folder: Path,
    csv_path: Optional[Path],
    trained,
    device: str,
    results: List[FileResult],
    ignored: List[str],
    complete: bool,
    elapsed: float,
    resumed: int,
    unreadable=(),
    resume_check: Optional[Dict] = None,
    finding: Optional[Dict] = None,
    size_histogram: Optional[str] = None,
    micrograph_notes: Optional[Dict[str, List[str]]] = None,
) -> Dict:
    """The run summary JSON. finding: the finder and its settings of a micrograph run (None for
    particle images); size_histogram: the name of the diameter histogram PNG written beside it."""
    from .micrographs import micrograph_table, size_summary

    card = trained.card
    errors = [{"path": r.path, **({"particle": r.particle.index} if r.particle is not None else {}),
               "error": r.error} for r in results if r.failed]
    n_ok = sum(r.ok for r in results)
    per_class = class_summary(results, card.classes)
    if finding is None:
        files = {"total": len(results), "ok": n_ok, "error": len(errors)}
    else:  # a micrograph run counts micrographs here and particles under "particles"
        paths = {r.path for r in results}
        broken = {r.path for r in results if r.failed and r.particle is None}
        files = {"total": len(paths), "ok": len(paths - broken), "error": len(broken),
                 "none_found": len({r.path for r in results if r.status == "none_found"})}
    files.update(resumed=resumed, ignored_non_image=len(ignored), unreadable_entries=len(unreadable))
    confusion, source = card_confusion(card)
    if confusion is not None:
        adjusted = adjusted_prevalence([per_class["counts"][c] for c in card.classes], confusion, card.classes)
        adjusted["confusion_source"] = f"model card metrics.{source}"
    else:
        adjusted = {"method": "not available: the model card holds no held-out confusion matrix"}
    return {
        "emclassify_version": __version__,
        "created": utc_now(),
        "folder": str(folder),
        "csv": csv_path.name if csv_path else None,
        "complete": complete,
        "model": {
            "path": str(trained.path) if trained.path else "",
            "sha256": trained.sha256,
            "name": card.name,
            "problem": card.problem,
            "arch": card.arch,
            "classes": card.classes,
            "preprocess": card.preprocess.to_dict(),
            "created": card.created,
            "validation": card.metrics.get("validation", {}).get("macro_f1"),
        },
        "device": device,
        "backend": backend_description(),
        "software": software_versions(),
        "files": files,
        **({"finding": finding, "particles": {"total": sum(r.particle is not None for r in results), "ok": n_ok,
                                              "error": sum(r.failed and r.particle is not None for r in results)},
            "micrographs": micrograph_table(results, list(card.classes), micrograph_notes, confusion)}
           if finding is not None else {}),
        **({"resume": resume_check} if resume_check else {}),
        **per_class,
        "adjusted": adjusted,
        "sizes": {**size_summary(results, list(card.classes)),
                  **({"histogram": size_histogram} if size_histogram else {})},
        "size_warnings": sum(1 for r in results if any(SIZE_NOTE in w for w in r.warnings)),
        # particles classified from a region not cut by their mask, by a model that learnt mask-cut ones
        "mask_fallbacks": (sum(1 for r in results if r.ok and region_fell_back(r.warnings))
                           if trained_on_masks(card.preprocess, card.training) else 0),
        **({"other_contrast": other_contrast_count(results, polarity)}
           if (polarity := card_polarity(card.data)) else {}),
        **({"duplicates": copies} if (copies := duplicate_files(results)) else {}),
        # given masks that look like something else than one particle's, by check (segment.MASK_CHECKS)
        "mask_problems": {k: sum(1 for r in results if any(mask_problem(w) == k for w in r.warnings))
                          for k in MASK_CHECKS},
        "errors": errors,
        "ignored_non_image": ignored,
        "unreadable_entries": [{"path": p, "reason": why} for p, why in unreadable],
        "elapsed_s": round(elapsed, 3),
    }


# At most this many copies are listed by name in the summary (all are counted).
MAX_DUPLICATES_LISTED = 100


def duplicate_files(results: Sequence[FileResult]) -> Dict:
    """The files of a run that are byte-for-byte copies of another of its files (the same SHA-256),
    among those with a classified row (only those count in the percentages), each with the first file
    (in path order) it copies: {"files": count, "listed": [{"path", "same_as"}, ...] (at most
    :data:`MAX_DUPLICATES_LISTED`)}, or {} when there are none.

    Why: a folder copied into itself, or a re-export beside the original, counts the same particles
    twice in the percentages, and nothing else in the record would show it."""
    first: Dict[str, str] = {}
    copies = []
    for path, sha in sorted({(r.path, r.sha256) for r in results if r.sha256 and r.ok}):
        if sha in first:
            copies.append({"path": path, "same_as": first[sha]})
        else:
            first[sha] = path
    return {"files": len(copies), "listed": copies[:MAX_DUPLICATES_LISTED]} if copies else {}


def other_contrast_count(results: Sequence[FileResult], polarity: str) -> Dict:
    """The summary's ``other_contrast``: the model's training particles' ``polarity``, the classified
    particles with a mask (a given one, or the finder's) and how many of those are of the other
    contrast (:func:`emclassify.contrast.other_contrast_warning` on their rows)."""
    masked = [r for r in results if r.ok and (r.mask or r.particle is not None)]
    return {"polarity": polarity, "with_mask": len(masked),
            "particles": sum(1 for r in masked if has_other_contrast_note(r.warnings))}


class BatchRun:
    """One classification of a folder by one model: the core object the CLI, the GUI and notebooks share.

    Construction checks everything that can be checked before work starts (model file, device,
    folder listing) and raises :class:`BatchError` with a message naming the problem.
    :meth:`batches` classifies, yielding one :class:`BatchResult` per batch and collecting the rows
    in :attr:`results`; :meth:`summary` and :meth:`save` turn the rows into the lab record (CSV +
    summary JSON, written atomically). :func:`run_batch` adds what a headless run to a named file
    needs on top (partial file after every batch, lock, resume); the GUI classifies into memory and
    saves on export. :meth:`from_csv` reopens a finished record (e.g. of a headless run) for review.
    """

    def __init__(self, folder, model=None, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                 workers: Optional[int] = None, allow_outside: bool = False, finder=None,
                 pixel_size_nm: Optional[float] = None, save_crops=None, save_labels=None):
        """finder: a particle finder (:func:`emclassify.finding.make_finder`) to classify whole
        micrographs, one row per particle; None classifies each file as one particle image.
        pixel_size_nm: overrides the pixel size read from the files' metadata. save_crops /
        save_labels (micrographs): folders for the particle crops (a training set layout) and the
        instance label images."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BatchError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        folder = Path(folder)
        if not folder.is_dir():
            raise BatchError(f"{folder}: no such folder")
        model_path = Path(model) if model else default_model_path()
        try:
            trained = load_model(model_path)
        except ModelFileError as exc:
            raise BatchError(str(exc)) from None
        try:
            classifier = Classifier(trained, device=device)
        except (RuntimeError, ValueError) as exc:
            raise BatchError(str(exc)) from None
        try:
            listing = list_images(folder, allow_outside=allow_outside)
        except DatasetError as exc:
            raise BatchError(str(exc)) from None
        if not listing.samples:
            raise BatchError(f"{folder}: no image files found (looked for {' '.join(IMAGE_EXTENSIONS)}, recursively)")
        if finder is None and (save_crops or save_labels):
            raise BatchError("--save-crops and --save-labels need --micrographs (particles are found in micrographs)")
        self._setup(trained, classifier, listing, batch_size, workers)
        self.finder, self.pixel_size_nm = finder, pixel_size_nm
        self.save_crops = Path(save_crops) if save_crops else None
        self.save_labels = Path(save_labels) if save_labels else None
        for out in (self.save_crops, self.save_labels):
            if out is not None and (out.resolve() == self.root or self.root in out.resolve().parents):
                raise BatchError(f"{out}: is inside the classified folder {self.root}; write crops and labels "
                                 "elsewhere (the next run would read them as images)")

    def _setup(self, trained, classifier: Optional[Classifier], listing: FolderListing, batch_size: int,
               workers: Optional[int]) -> None:
        self.trained, self.classifier, self.listing = trained, classifier, listing
        self.batch_size, self.workers = batch_size, workers
        self.finder, self.pixel_size_nm = None, None
        self.save_crops = self.save_labels = None
        self._finding_record: Optional[Dict] = None
        self.micrograph_notes: Dict[str, List[str]] = {}
        self.results: List[FileResult] = []
        self.resumed = 0
        self.resume_check: Optional[Dict] = None
        self.complete = False
        self.device = str(classifier.device) if classifier is not None else "cpu"
        self._t0 = time.perf_counter()
        self.elapsed = 0.0

    @property
    def classes(self) -> List[str]:
        return list(self.trained.card.classes)

    @property
    def root(self) -> Path:
        """The classified folder; rows' ``path`` are relative to it."""
        return self.listing.root

    @property
    def total(self) -> int:
        return len(self.listing.samples)

    @property
    def micrographs(self) -> bool:
        """True when files are whole micrographs (one row per particle found)."""
        return self.finder is not None or self._finding_record is not None

    @property
    def finding(self) -> Optional[Dict]:
        """The finder and its settings (and any pixel-size override) of a micrograph run, else None."""
        if self._finding_record is not None:
            return self._finding_record
        if self.finder is None:
            return None
        return {**self.finder.params(), "pixel_size_nm_override": self.pixel_size_nm}

    def batches(self, cancel: Optional[CancelToken] = None, skip=(),
                progress: Optional[Progress] = None) -> Iterator[BatchResult]:
        """Classify the files not in ``skip`` (relative paths), batch by batch, collecting the rows.

        progress receives :class:`~emclassify.events.BatchStarted`, then a
        :class:`~emclassify.events.BatchClassified` per batch once the caller has taken the batch
        (so a listener that stops the run never loses rows the caller has not recorded). Stops after the batch in progress when ``cancel`` is cancelled; :attr:`complete` says
        whether every file was reached.
        """
        if self.classifier is None:
            raise BatchError(f"{self.root}: this record was reopened for review; classify the folder again to add rows")
        self.complete = False
        skip = set(skip)
        # micrographs' tiles and maps, batches of crops: large blocks freed and allocated again and
        # again; kept for reuse, an 8k micrograph's learned finder ran 29 % faster (BENCHMARKS.md)
        reuse_freed_memory()
        emit(progress, BatchStarted(self, sum(1 for s in self.listing.samples if s.relpath not in skip)))
        if self.finder is not None:
            source = self._micrograph_batches(skip, cancel)
        else:
            source = classify_folder(self.root, self.classifier, batch_size=self.batch_size, skip=skip,
                                     cancel=cancel, workers=self.workers, listing=self.listing,
                                     pixel_size_nm=self.pixel_size_nm)
        for batch in source:
            self.results.extend(batch.results)
            self.elapsed = time.perf_counter() - self._t0
            yield batch  # the caller records it first (run_batch: appends the rows to the partial file)
            emit(progress, BatchClassified(batch))
        self.complete = not (cancel is not None and cancel.cancelled)
        self.elapsed = time.perf_counter() - self._t0

    def _micrograph_batches(self, skip, cancel) -> Iterator[BatchResult]:
        from .micrographs import CropWriter, classify_micrographs, crop_context, write_label_image

        crops = CropWriter(self.save_crops) if self.save_crops else None
        context = crop_context(self.trained.card)

        def exported(found, rows):
            self.micrograph_notes[found.sample.relpath] = found.notes
            if crops is not None:
                crops.add(found, rows, context)
            if self.save_labels is not None:
                write_label_image(self.save_labels, found)

        try:
            yield from classify_micrographs(self.listing, self.classifier, self.finder, self.batch_size, skip,
                                            cancel, self.pixel_size_nm, exported)
        finally:
            if crops is not None:
                crops.close()

    def summary(self, csv_path=None) -> Dict:
        """The summary of the rows so far (``csv``: the CSV's name, None while the record is unsaved)."""
        return build_summary(folder=self.root, csv_path=Path(csv_path) if csv_path else None, trained=self.trained,
                             device=self.device, results=self.results, ignored=self.listing.ignored,
                             complete=self.complete, elapsed=self.elapsed, resumed=self.resumed,
                             unreadable=self.listing.unreadable, resume_check=self.resume_check,
                             finding=self.finding, micrograph_notes=self.micrograph_notes,
                             size_histogram=histogram_path_for(csv_path).name if csv_path else None)

    def save(self, csv_path) -> Tuple[Path, Path, Dict]:
        """Write the CSV, ``<csv stem>.summary.json`` and (when particles were measured) the diameter
        histogram ``<csv stem>.sizes.png``, each atomically; returns the CSV and summary paths and the summary."""
        from .micrographs import size_histogram_png

        csv_path = Path(csv_path)
        write_csv(csv_path, self.results, self.classes, micrographs=self.micrographs)
        png = size_histogram_png(self.results, self.classes)
        if png is not None:
            write_bytes_atomic(histogram_path_for(csv_path), png)
        summary = self.summary(csv_path)
        if png is None:
            summary["sizes"].pop("histogram", None)
        if self.micrographs:
            table = micrographs_path_for(csv_path)
            write_text_atomic(table, micrograph_csv_text(summary["micrographs"], self.classes))
            summary["micrograph_table"] = table.name
        return csv_path, write_json(summary_path_for(csv_path), summary), summary

    @classmethod
    def from_csv(cls, csv_path, model=None) -> "BatchRun":
        """Reopen a finished record (CSV + its summary) for viewing and review.

        The model is the one the summary names (or ``model``); its SHA-256 must match the
        record's, so the review log names the model that made the predictions. The rows are the
        CSV's; the folder is the summary's (it must still exist to show the images).
        """
        csv_path = Path(csv_path)
        summary = _read_json_dict(summary_path_for(csv_path))
        if summary is None:
            raise BatchError(f"{csv_path}: its summary {summary_path_for(csv_path).name} is missing or unreadable")
        recorded = summary.get("model") if isinstance(summary.get("model"), dict) else {}
        model_path = Path(model) if model else Path(str(recorded.get("path") or ""))
        if not str(model_path) or not model_path.is_file():
            raise BatchError(f"{csv_path}: the model that wrote it ({recorded.get('path') or 'unknown'}) is not "
                             "found; choose that model file")
        try:
            trained = load_model(model_path)
        except ModelFileError as exc:
            raise BatchError(str(exc)) from None
        if recorded.get("sha256") and trained.sha256 != recorded.get("sha256"):
            raise BatchError(f"{csv_path}: written with another model (sha256 {str(recorded['sha256'])[:12]}…) "
                             f"than {model_path} ({trained.sha256[:12]}…)")
        folder = Path(str(summary.get("folder") or ""))
        if not folder.is_dir():
            raise BatchError(f"{csv_path}: the classified folder {folder} no longer exists")
        try:
            rows = read_csv(csv_path, trained.card.classes)
        except ReportError as exc:
            raise BatchError(str(exc)) from None
        def as_list(value) -> list:  # a hand-edited summary may hold anything: keep what is well formed
            return value if isinstance(value, list) else []

        unreadable = [(str(u.get("path")), str(u.get("reason"))) for u in as_list(summary.get("unreadable_entries"))
                      if isinstance(u, dict)]
        listing = FolderListing(folder.resolve(), [], [str(p) for p in as_list(summary.get("ignored_non_image"))],
                                unreadable)
        run = cls.__new__(cls)
        run._setup(trained, None, listing, DEFAULT_BATCH_SIZE, None)
        run.results = rows
        run.complete = summary.get("complete") is not False
        elapsed = summary.get("elapsed_s")
        run.elapsed = float(elapsed) if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) else 0.0
        run.device = str(summary.get("device") or "cpu")
        finding = summary.get("finding")
        run._finding_record = finding if isinstance(finding, dict) else None
        return run


def run_batch(
    folder,
    model=None,
    out=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    resume: bool = False,
    progress: Optional[Progress] = None,
    cancel: Optional[CancelToken] = None,
    workers: Optional[int] = None,
    allow_outside: bool = False,
    finder=None,
    pixel_size_nm: Optional[float] = None,
    save_crops=None,
    save_labels=None,
) -> BatchOutcome:
    """Classify every image under ``folder`` and write the CSV + summary. See module doc.

    finder, pixel_size_nm, save_crops, save_labels: as in :class:`BatchRun` (micrographs).
    progress receives a :class:`emclassify.events.BatchClassified` per batch. Raises
    :class:`BatchError` when nothing can run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BatchError(f"{folder}: no such folder")
    csv_path = Path(out) if out else default_output(folder)
    check_output(csv_path)
    run = BatchRun(folder, model, batch_size=batch_size, device=device, workers=workers, allow_outside=allow_outside,
                   finder=finder, pixel_size_nm=pixel_size_nm, save_crops=save_crops, save_labels=save_labels)
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"{csv_path}: cannot write output: {exc.strerror or exc}") from None
    with output_lock(csv_path):
        return _run_locked(run, csv_path, resume, progress, cancel)


def _run_locked(run: BatchRun, csv_path: Path, resume: bool, progress, cancel) -> BatchOutcome:
    partial = partial_path_for(csv_path)
    classes = run.classes
    identity = _run_identity(run.trained, run.root, run.finding)
    if resume:
        previous, run.resume_check = _still_valid(_load_previous(csv_path, classes, identity), run.listing)
        run.results, run.resumed = list(previous), len(previous)
    interrupted = False
    try:
        write_json(run_record_path_for(csv_path), {**identity, "started": utc_now(), "emclassify_version": __version__})
        fh = open(partial, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise BatchError(f"{csv_path}: cannot write output: {exc.strerror or exc}") from None
    try:
        writer = csv.writer(fh, lineterminator="\n")
        micrographs = run.micrographs
        writer.writerow(csv_columns(classes, micrographs))
        writer.writerows(row_values(r, classes, micrographs) for r in run.results)
        fh.flush()
        try:
            for batch in run.batches(cancel=cancel, skip={r.path for r in run.results}, progress=progress):
                writer.writerows(row_values(r, classes, micrographs) for r in batch.results)
                fh.flush()
        except KeyboardInterrupt:
            interrupted = True
            run.complete = False
    finally:
        fh.close()

    _, summary_path, summary = run.save(csv_path)
    for leftover in (partial, run_record_path_for(csv_path)):
        with contextlib.suppress(OSError):
            os.unlink(leftover)
    if interrupted:
        code = EXIT_INTERRUPTED
    elif summary["errors"]:
        code = EXIT_SOME_ERRORS
    else:
        code = EXIT_OK
    return BatchOutcome(csv_path, summary_path, summary, run.results, code)
