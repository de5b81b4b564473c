"""The lab record: per-file CSV and the run summary JSON.

CSV columns, in this order::

    path, sha256, status, error, predicted_class, confidence,
    prob_<class> (one per class, model order), width, height, mask, warnings

``path`` is relative to the classified folder (POSIX separators); ``status`` is
``ok`` or ``error``; ``error`` is empty when ok; probabilities and confidence
have 6 decimals; ``mask`` is the mask file used (relative), ``warnings`` notes
joined by ``"; "``. Both files are written atomically.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from .atomic import write_text_atomic
from .inference import FileResult
from .io import sort_key

LEADING = ["path", "sha256", "status", "error", "predicted_class", "confidence"]
TRAILING = ["width", "height", "mask", "warnings"]


class ReportError(Exception):
    """An existing CSV that cannot be resumed; the message says why."""


def csv_columns(classes: Sequence[str]) -> List[str]:
    return LEADING + [f"prob_{c}" for c in classes] + TRAILING


def _num(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.6f}"


def row_values(r: FileResult, classes: Sequence[str]) -> List[str]:
    probs = r.probabilities if r.probabilities is not None else [None] * len(classes)
    return [
        r.path,
        r.sha256,
        r.status,
        r.error,
        r.predicted_class,
        _num(r.confidence),
        *[_num(p) for p in probs],
        "" if r.width is None else str(r.width),
        "" if r.height is None else str(r.height),
        r.mask,
        "; ".join(r.warnings),
    ]


def csv_text(results: Iterable[FileResult], classes: Sequence[str], header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(csv_columns(classes))
    for r in results:
        w.writerow(row_values(r, classes))
    return buf.getvalue()


def sorted_results(results: Iterable[FileResult]) -> List[FileResult]:
    return sorted(results, key=lambda r: sort_key(r.path))


def write_csv(path, results: Iterable[FileResult], classes: Sequence[str]) -> Path:
    """Write the full CSV atomically, rows in the stable path order."""
    return write_text_atomic(path, csv_text(sorted_results(results), classes))


def read_csv(path, classes: Sequence[str]) -> List[FileResult]:
    """Read rows back from a CSV written for ``classes`` (for ``--resume``).

    Raises :class:`ReportError` when the columns do not match these classes (a
    CSV of another model must not be silently extended).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    expected = csv_columns(classes)
    if header != expected:
        raise ReportError(
            f"{path}: columns do not match this model's classes ({', '.join(classes)}); "
            "it was written by another model or is not an emclassify CSV"
        )
    n = len(classes)
    out = []
    for values in rows:
        if len(values) != len(expected):
            continue  # a torn last line of an interrupted run: that file is redone
        d = dict(zip(expected, values))
        probs = [float(d[f"prob_{c}"]) for c in classes] if d["status"] == "ok" else None
        out.append(
            FileResult(
                path=d["path"],
                sha256=d["sha256"],
                status=d["status"],
                error=d["error"],
                predicted_class=d["predicted_class"],
                confidence=float(d["confidence"]) if d["confidence"] else None,
                probabilities=probs if probs is None or len(probs) == n else None,
                width=int(d["width"]) if d["width"] else None,
                height=int(d["height"]) if d["height"] else None,
                mask=d["mask"],
                warnings=[w for w in d["warnings"].split("; ") if w],
            )
        )
    return out


def class_summary(results: Sequence[FileResult], classes: Sequence[str]) -> Dict:
    """Counts and percentages (of successfully classified files) per class."""
    ok = [r for r in results if r.ok]
    counts = {c: 0 for c in classes}
    for r in ok:
        counts[r.predicted_class] = counts.get(r.predicted_class, 0) + 1
    n = len(ok)
    pct = {c: (100.0 * counts[c] / n if n else 0.0) for c in classes}
    return {"counts": counts, "percentages": pct}


def write_json(path, data: Dict) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def summary_path_for(csv_path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.stem + ".summary.json")


def format_summary(summary: Dict) -> str:
    """Terminal text of a batch summary."""
    files = summary["files"]
    lines = [
        f"{files['ok']} of {files['total']} files classified"
        + (f", {files['error']} in error" if files["error"] else "")
        + (f", {files['ignored_non_image']} non-image files ignored" if files.get("ignored_non_image") else ""),
    ]
    width = max([len(c) for c in summary["counts"]] + [5])
    adjusted = summary.get("adjusted", {}).get("classes")
    if adjusted:
        lines.append(f"  {'class':<{width}} {'files':>7}  {'raw %':>7}  {'adjusted % [95 % interval]':>30}")
    for c, n in summary["counts"].items():
        line = f"  {c:<{width}} {n:>7}  {summary['percentages'][c]:6.2f} %"
        if adjusted and adjusted[c]["percent"] is not None:
            a = adjusted[c]
            line += f"  {a['percent']:8.2f} %  [{a['ci95'][0]:6.2f}, {a['ci95'][1]:6.2f}]"
        lines.append(line)
    if adjusted:
        lines.append("  adjusted = corrected for the model's misclassification rates (see summary JSON 'adjusted')")
        unseen = summary.get("adjusted", {}).get("unseen_classes") or []
        if unseen:
            lines.append(f"  note: the model's held-out data had no {', '.join(unseen)} particles, so how well it "
                         "recognises them is unknown and their intervals are wide")
    if summary.get("size_warnings"):
        lines.append(f"  WARNING: {summary['size_warnings']} image(s) are far larger or smaller than the images this "
                     "model was trained on (whole micrographs?); their predictions are unreliable (see 'warnings' in "
                     "the CSV)")
    for e in summary.get("errors", [])[:10]:
        lines.append(f"  error: {e['path']}: {e['error']}")
    if len(summary.get("errors", [])) > 10:
        lines.append(f"  ... and {len(summary['errors']) - 10} more errors (see the CSV)")
    return "\n".join(lines)
