"""The lab record: per-file (or per-particle) CSV and the run summary JSON.

Particle images, one row per file, columns in this order::

    path, sha256, status, error, predicted_class, confidence,
    prob_<class> (one per class, model order), width, height, mask,
    area_px, diameter_px, pixel_size_nm, area_nm2, diameter_nm, warnings

Micrographs (``batch --micrographs``), one row per particle found::

    micrograph, sha256, particle, cx, cy, x0, y0, x1, y1,
    area_px, diameter_px, pixel_size_nm, area_nm2, diameter_nm, touches_border, detection_score,
    status, error, predicted_class, confidence, prob_<class>..., warnings

``path``/``micrograph`` is relative to the classified folder (POSIX separators); ``status`` is
``ok``, ``error`` or (micrographs) ``none_found``; ``error`` is empty unless in error;
probabilities and confidence have 6 decimals. Sizes come from the particle's mask
(equivalent-circle diameter); the nm columns are empty when the pixel size is unknown (the
columns are always there, so every record of a lab has the same layout). Coordinates and boxes
are pixel indices of the micrograph (box half-open). ``warnings`` are notes joined by ``"; "``.
Both files are written atomically. CSVs of earlier versions (without the size columns) are
still read for ``--resume`` and review.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from .atomic import write_text_atomic
from .contrast import OTHER_CONTRAST_RUN_SHARE
from .segment import describe_mask_problems
from .finding.detections import Particle, ParticleSize
from .inference import FileResult
from .io import sort_key

LEADING = ["path", "sha256", "status", "error", "predicted_class", "confidence"]
SIZE_COLUMNS = ["area_px", "diameter_px", "pixel_size_nm", "area_nm2", "diameter_nm"]
TRAILING = ["width", "height", "mask"] + SIZE_COLUMNS + ["warnings"]
LEGACY_TRAILING = ["width", "height", "mask", "warnings"]  # before sizes were recorded
PARTICLE_LEADING = (["micrograph", "sha256", "particle", "cx", "cy", "x0", "y0", "x1", "y1"] + SIZE_COLUMNS
                    + ["touches_border", "detection_score", "status", "error", "predicted_class", "confidence"])


class ReportError(Exception):
    """An existing CSV that cannot be resumed; the message says why."""


def csv_columns(classes: Sequence[str], micrographs: bool = False) -> List[str]:
    probs = [f"prob_{c}" for c in classes]
    if micrographs:
        return PARTICLE_LEADING + probs + ["warnings"]
    return LEADING + probs + TRAILING


def _num(v: Optional[float], digits: int = 6) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _size_values(size: Optional[ParticleSize]) -> List[str]:
    if size is None:
        return [""] * len(SIZE_COLUMNS)
    nm = size.pixel_size_nm
    return [str(size.area_px), _num(size.diameter_px, 3), "" if nm is None else f"{nm:.6g}",
            _num(size.area_nm2, 3), _num(size.diameter_nm, 3)]


def row_values(r: FileResult, classes: Sequence[str], micrographs: bool = False) -> List[str]:
    probs = r.probabilities if r.probabilities is not None else [None] * len(classes)
    verdict = [r.status, r.error, r.predicted_class, _num(r.confidence), *[_num(p) for p in probs]]
    if micrographs:
        p = r.particle
        where = ([str(p.index), _num(p.centroid[0], 2), _num(p.centroid[1], 2), *map(str, p.box)]
                 if p is not None else [""] * 7)
        found = ["yes" if p.touches_border else "no", _num(p.score, 4)] if p is not None else ["", ""]
        return [r.path, r.sha256, *where, *_size_values(r.size), *found, *verdict, "; ".join(r.warnings)]
    return [
        r.path,
        r.sha256,
        *verdict,
        "" if r.width is None else str(r.width),
        "" if r.height is None else str(r.height),
        r.mask,
        *_size_values(r.size),
        "; ".join(r.warnings),
    ]


def csv_text(results: Iterable[FileResult], classes: Sequence[str], header: bool = True,
             micrographs: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(csv_columns(classes, micrographs))
    for r in results:
        w.writerow(row_values(r, classes, micrographs))
    return buf.getvalue()


def micrograph_columns(classes: Sequence[str], adjusted: bool, nm: bool) -> List[str]:
    """Columns of the per-micrograph CSV (:func:`micrograph_csv_text`)."""
    cols = ["micrograph", "status", "particles", "classified", "errors"]
    cols += [f"count_{c}" for c in classes] + [f"percent_{c}" for c in classes]
    if adjusted:
        for c in classes:
            cols += [f"adjusted_percent_{c}", f"ci95_low_{c}", f"ci95_high_{c}"]
    units = ["px", "nm"] if nm else ["px"]
    for unit in units:
        cols += [f"median_diameter_{unit}_{c}" for c in classes]
    return cols + ["pixel_size_nm", "warnings"]


def micrograph_csv_text(table: Sequence[Dict], classes: Sequence[str]) -> str:
    """The summary's per-micrograph table (:func:`emclassify.micrographs.micrograph_table`) as CSV: one row
    per micrograph with its counts, %, adjusted % and 95 % interval per class (when the model's card
    allows the adjustment), median equivalent-circle diameter per class (px, and nm when every
    micrograph's pixel size is known) and its warnings."""
    adjusted = bool(table) and all("adjusted" in m for m in table)
    nm = bool(table) and all("diameter_nm" in m.get("sizes", {}) for m in table if m["particles"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(micrograph_columns(classes, adjusted, nm))
    for m in table:
        row = [m["micrograph"], m["status"], m["particles"], m["classified"], m["errors"]]
        some = m["classified"] > 0   # no percentages of nothing
        row += [m["counts"][c] for c in classes] + [_num(m["percentages"][c] if some else None, 2) for c in classes]
        if adjusted:
            for c in classes:
                a = m["adjusted"][c]
                row += [_num(a["percent"], 2), _num(a["ci95"][0], 2), _num(a["ci95"][1], 2)]
        for unit in ["px", "nm"] if nm else ["px"]:
            by_class = m.get("sizes", {}).get(f"diameter_{unit}", {})
            row += [_num(by_class.get(c, {}).get("median"), 3) for c in classes]
        nm_px = m.get("pixel_size_nm")
        row += ["" if nm_px is None else f"{nm_px:.6g}", "; ".join(m.get("warnings", []))]
        w.writerow(row)
    return buf.getvalue()


def row_key(r: FileResult) -> tuple:
    """Identity of a row: the file, and in micrograph runs the particle number."""
    return (r.path, r.particle.index if r.particle is not None else 0)


def sorted_results(results: Iterable[FileResult]) -> List[FileResult]:
    return sorted(results, key=lambda r: (sort_key(r.path), row_key(r)[1]))


def write_csv(path, results: Iterable[FileResult], classes: Sequence[str], micrographs: bool = False) -> Path:
    """Write the full CSV atomically, rows in the stable path (then particle) order."""
    return write_text_atomic(path, csv_text(sorted_results(results), classes, micrographs=micrographs))


def _int(v: str) -> Optional[int]:
    try:
        return int(v) if v else None
    except ValueError:
        return None


def _float(v: str) -> Optional[float]:
    try:
        return float(v) if v else None
    except ValueError:
        return None


def _read_size(d: Dict[str, str]) -> Optional[ParticleSize]:
    area = _int(d.get("area_px", ""))
    diameter = _float(d.get("diameter_px", ""))
    if area is None or diameter is None:
        return None
    return ParticleSize(area, diameter, _float(d.get("pixel_size_nm", "")))


def _read_particle(d: Dict[str, str], size: Optional[ParticleSize]) -> Optional[Particle]:
    box = [_int(d.get(k, "")) for k in ("x0", "y0", "x1", "y1")]
    index, cx, cy = _int(d.get("particle", "")), _float(d.get("cx", "")), _float(d.get("cy", ""))
    if index is None or cx is None or cy is None or None in box or size is None:
        return None
    return Particle(index, tuple(box), (cx, cy), size, d.get("touches_border") == "yes",
                    _float(d.get("detection_score", "")) or 0.0)


def csv_layout(header: Sequence[str], classes: Sequence[str]) -> Optional[str]:
    """``particles``, ``micrographs`` or ``legacy`` (particles, before size columns) for a header
    written for these classes; None when it is not an emclassify CSV of these classes."""
    if list(header) == csv_columns(classes):
        return "particles"
    if list(header) == csv_columns(classes, micrographs=True):
        return "micrographs"
    if list(header) == LEADING + [f"prob_{c}" for c in classes] + LEGACY_TRAILING:
        return "legacy"
    return None


def read_csv(path, classes: Sequence[str]) -> List[FileResult]:
    """Read rows back from a CSV written for ``classes`` (for ``--resume`` and review), either layout.

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
    layout = csv_layout(header or [], classes)
    if layout is None:
        raise ReportError(
            f"{path}: columns do not match this model's classes ({', '.join(classes)}); "
            "it was written by another model or is not an emclassify CSV"
        )
    n = len(classes)
    out = []
    for values in rows:
        if len(values) != len(header):
            continue  # a torn last line of an interrupted run: that file is redone
        d = dict(zip(header, values))
        try:
            probs = [float(d[f"prob_{c}"]) for c in classes] if d["status"] == "ok" else None
        except ValueError:
            continue  # a hand-edited or torn row: that file is redone
        size = _read_size(d)
        out.append(
            FileResult(
                path=d["micrograph"] if layout == "micrographs" else d["path"],
                sha256=d["sha256"],
                status=d["status"],
                error=d["error"],
                predicted_class=d["predicted_class"],
                confidence=_float(d["confidence"]),
                probabilities=probs if probs is None or len(probs) == n else None,
                width=_int(d.get("width", "")),
                height=_int(d.get("height", "")),
                mask=d.get("mask", ""),
                warnings=[w for w in d["warnings"].split("; ") if w],
                size=size,
                particle=_read_particle(d, size) if layout == "micrographs" else None,
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


def flagged_micrographs(summary: Dict) -> List[Dict]:
    """The entries of a micrograph run's ``micrographs`` table that carry warnings (particles in doubt)."""
    return [m for m in summary.get("micrographs") or [] if m.get("warnings")]


def doubt_headline(summary: Dict) -> Optional[str]:
    """"N of the M particles are in K micrograph(s) whose particles are in doubt", or None: the CLI's
    and the GUI's one line on :func:`flagged_micrographs`."""
    flagged = flagged_micrographs(summary)
    if not flagged:
        return None
    total = (summary.get("particles") or {}).get("total", "?")
    return (f"{sum(m['particles'] for m in flagged)} of the {total} particles are in {len(flagged)} micrograph(s) "
            "whose particles are in doubt (their rows' warnings say why)")


def run_warnings(summary: Dict) -> List[str]:
    """What a batch summary says degrades the whole run's figures, one sentence each, for the CLI and
    the GUI alike (the micrographs in doubt have their own lines: :func:`doubt_headline`)."""
    out = []
    if summary.get("size_warnings"):
        out.append(f"{summary['size_warnings']} image(s) are far larger or smaller than the images this model was "
                   "trained on (whole micrographs?); their predictions are unreliable (see 'warnings' in the CSV)")
    fallbacks = summary.get("mask_fallbacks")
    if fallbacks:
        pre = summary.get("model", {}).get("preprocess", {})
        how = ("by automatic segmentation" if pre.get("mode") == "mask"
               else f"as a central crop with a {pre.get('margin', '?')} px margin")
        ok = summary.get("files", {}).get("ok", fallbacks)
        out.append(f"{fallbacks} of the {ok} images classified had no mask, but this model learnt particles cut out "
                   f"by their masks: these were cut {how} instead, and their predictions are much less reliable. "
                   "Give the masks (a masks/ folder mirroring the images, <name>_mask files beside them, or a 'mask' "
                   "column in manifest.csv), or train a model on images like these")
    problems = summary.get("mask_problems")
    if isinstance(problems, dict):
        out.extend(f"{s} (see 'warnings' in the CSV)" for s in describe_mask_problems(problems, "mask(s)"))
    copies = summary.get("duplicates") or {}
    if copies.get("files"):
        first = copies["listed"][0] if copies.get("listed") else None
        example = f", e.g. {first['path']} is {first['same_as']}" if first else ""
        what = "particles are" if summary.get("particles") is not None else "particle is"
        out.append(f"{copies['files']} file(s) are byte-for-byte copies of other files of this run (the same "
                   f"SHA-256){example}: each copy's {what} counted again in the percentages (see 'duplicates' in the "
                   "summary JSON)")
    other = summary.get("other_contrast") or {}
    if other.get("particles") and other["particles"] > OTHER_CONTRAST_RUN_SHARE * other.get("with_mask", 0):
        this, learnt = ("brighter", "darker") if other.get("polarity") == "dark" else ("darker", "brighter")
        out.append(f"{other['particles']} of the {other['with_mask']} particles measured against their masks are {this} "
                   f"than their surroundings, but this model learnt {learnt} particles (negative stain, or inverted "
                   "images?): their predictions are unreliable; classify them with a model trained on particles of "
                   "their contrast")
    return out


def format_summary(summary: Dict) -> str:
    """Terminal text of a batch summary."""
    files = summary["files"]
    particles = summary.get("particles")
    if particles is not None:
        unit = "particles"
        lines = [
            f"{particles['total']} particles found in {files['total']} micrographs, {particles['ok']} classified"
            + (f", {particles['error']} in error" if particles["error"] else "")
            + (f"; {files['none_found']} micrographs with none found" if files.get("none_found") else "")
            + (f"; {files['error']} micrographs unreadable" if files["error"] else ""),
        ]
    else:
        unit = "files"
        lines = [
            f"{files['ok']} of {files['total']} files classified"
            + (f", {files['error']} in error" if files["error"] else "")
            + (f", {files['ignored_non_image']} non-image files ignored" if files.get("ignored_non_image") else ""),
        ]
    width = max([len(c) for c in summary["counts"]] + [5])
    adjusted = summary.get("adjusted", {}).get("classes")
    if adjusted:
        lines.append(f"  {'class':<{width}} {unit:>9}  {'raw %':>7}  {'adjusted % [95 % interval]':>30}")
    for c, n in summary["counts"].items():
        line = f"  {c:<{width}} {n:>9}  {summary['percentages'][c]:6.2f} %"
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
    sizes = summary.get("sizes") or {}
    by_class = sizes.get("diameter_nm") or sizes.get("diameter_px") or {}
    unit_name = "nm" if sizes.get("diameter_nm") else "px"
    measured = {c: v for c, v in by_class.items() if v.get("n")}
    if measured:
        lines.append(f"  diameter ({unit_name}, median [IQR]): " + "; ".join(
            f"{c} {v['median']:.1f} [{v['q1']:.1f}-{v['q3']:.1f}]" for c, v in measured.items()))
    lines.extend(f"  WARNING: {w}" for w in run_warnings(summary))
    flagged = flagged_micrographs(summary)
    if flagged:
        lines.append(f"  WARNING: {doubt_headline(summary)}:")
        for m in flagged[:10]:
            lines.extend(f"    {m['micrograph']}: {w}" for w in m["warnings"])
        if len(flagged) > 10:
            lines.append(f"    ... and {len(flagged) - 10} more micrographs (see 'micrographs' in the summary JSON)")
    for e in summary.get("errors", [])[:10]:
        where = f"{e['path']} particle {e['particle']}" if "particle" in e else e["path"]
        lines.append(f"  error: {where}: {e['error']}")
    if len(summary.get("errors", [])) > 10:
        lines.append(f"  ... and {len(summary['errors']) - 10} more errors (see the CSV)")
    return "\n".join(lines)
