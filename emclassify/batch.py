"""``emclassify batch``: classify a folder into a CSV lab record plus a summary.

:func:`run_batch` is the whole job behind the CLI command (and usable from
Python). While it runs, rows are appended to ``<csv>.partial`` after every batch,
so an interrupted or killed run loses at most one batch and ``resume=True``
continues from it. At the end (also after Ctrl-C or cancel) the CSV and
``<csv stem>.summary.json`` are written atomically and the partial file removed.

Exit codes (:data:`EXIT_CODES`): 0 all files classified; 3 some files in error
(they are listed in the CSV); 4 nothing could run (bad model, missing or empty
folder, CSV of another model); 130 interrupted (results so far are kept).
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ._native import backend_description
from ._version import __version__
from .assets import default_model_path
from .inference import BatchResult, CancelToken, Classifier, FileResult, classify_folder
from .io import DatasetError, list_images
from .modelfile import ModelFileError, load_model, software_versions, utc_now
from .prevalence import adjusted_prevalence, card_confusion
from .reports import (
    ReportError,
    class_summary,
    csv_columns,
    read_csv,
    row_values,
    summary_path_for,
    write_csv,
    write_json,
)

EXIT_OK = 0
EXIT_SOME_ERRORS = 3
EXIT_NOTHING_RAN = 4
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "all files classified",
    EXIT_SOME_ERRORS: "some files could not be classified (status=error rows in the CSV)",
    EXIT_NOTHING_RAN: "nothing could run (bad model, missing or empty folder, unusable output)",
    EXIT_INTERRUPTED: "interrupted; the results so far were written (use --resume to continue)",
}


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
    """Where the CSV goes without ``--out``: ``./<folder name>.emclassify.csv`` (never inside the folder)."""
    return Path.cwd() / f"{Path(folder).resolve().name}.emclassify.csv"


def partial_path_for(csv_path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name + ".partial")


def _load_previous(csv_path: Path, classes, model_sha: str) -> List[FileResult]:
    """Rows of an earlier run of the same model on this output (final CSV and/or partial file)."""
    summary = summary_path_for(csv_path)
    if summary.is_file():
        try:
            prev_sha = json.loads(summary.read_text(encoding="utf-8")).get("model", {}).get("sha256")
        except (OSError, ValueError):
            prev_sha = None
        if prev_sha and prev_sha != model_sha:
            raise BatchError(
                f"{csv_path} was written with another model (sha256 {prev_sha[:12]}…); "
                "use a different --out, or drop --resume to overwrite it"
            )
    rows: Dict[str, FileResult] = {}
    for source in (csv_path, partial_path_for(csv_path)):
        if source.is_file():
            try:
                for r in read_csv(source, classes):
                    rows[r.path] = r
            except ReportError as exc:
                raise BatchError(str(exc)) from None
    return list(rows.values())


def build_summary(
    *,
    folder: Path,
    csv_path: Path,
    trained,
    device: str,
    results: List[FileResult],
    ignored: List[str],
    complete: bool,
    elapsed: float,
    resumed: int,
) -> Dict:
    card = trained.card
    errors = [{"path": r.path, "error": r.error} for r in results if not r.ok]
    n_ok = sum(r.ok for r in results)
    per_class = class_summary(results, card.classes)
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
        "csv": csv_path.name,
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
        "files": {
            "total": len(results),
            "ok": n_ok,
            "error": len(errors),
            "resumed": resumed,
            "ignored_non_image": len(ignored),
        },
        **per_class,
        "adjusted": adjusted,
        "errors": errors,
        "ignored_non_image": ignored,
        "elapsed_s": round(elapsed, 3),
    }


def run_batch(
    folder,
    model=None,
    out=None,
    batch_size: int = 64,
    device: str = "auto",
    resume: bool = False,
    on_batch: Optional[Callable[[BatchResult], None]] = None,
    cancel: Optional[CancelToken] = None,
    workers: Optional[int] = None,
) -> BatchOutcome:
    """Classify every image under ``folder`` and write the CSV + summary. See module doc.

    Raises :class:`BatchError` when nothing can run.
    """
    t0 = time.perf_counter()
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
        listing = list_images(folder)
    except DatasetError as exc:
        raise BatchError(str(exc)) from None
    if not listing.samples:
        raise BatchError(f"{folder}: no image files found (looked for .tif .tiff .png .jpg .jpeg .bmp, recursively)")

    csv_path = Path(out) if out else default_output(folder)
    partial = partial_path_for(csv_path)
    classes = trained.card.classes
    previous = _load_previous(csv_path, classes, trained.sha256) if resume else []
    done_paths = {r.path for r in previous}

    new: List[FileResult] = []
    interrupted = False
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(partial, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise BatchError(f"{csv_path}: cannot write output: {exc.strerror or exc}") from None
    try:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(csv_columns(classes))
        writer.writerows(row_values(r, classes) for r in previous)
        fh.flush()
        try:
            for batch in classify_folder(
                folder, classifier, batch_size=batch_size, skip=done_paths, cancel=cancel,
                workers=workers, listing=listing,
            ):
                new.extend(batch.results)
                writer.writerows(row_values(r, classes) for r in batch.results)
                fh.flush()
                if on_batch is not None:
                    on_batch(batch)
        except KeyboardInterrupt:
            interrupted = True
    finally:
        fh.close()

    results = previous + new
    complete = not interrupted and not (cancel is not None and cancel.cancelled)
    write_csv(csv_path, results, classes)
    summary = build_summary(
        folder=listing.root,
        csv_path=csv_path,
        trained=trained,
        device=str(classifier.device),
        results=results,
        ignored=listing.ignored,
        complete=complete,
        elapsed=time.perf_counter() - t0,
        resumed=len(previous),
    )
    summary_path = write_json(summary_path_for(csv_path), summary)
    try:
        os.unlink(partial)
    except OSError:
        pass
    if interrupted:
        code = EXIT_INTERRUPTED
    elif summary["files"]["error"]:
        code = EXIT_SOME_ERRORS
    else:
        code = EXIT_OK
    return BatchOutcome(csv_path, summary_path, summary, results, code)
