"""Cross-validation and comparison reports: JSON, CSV, Markdown and PNG figures.

``write_cv_report(result, DIR)`` writes

- ``metrics.json``: classes, accuracy, macro_f1, per_class.{c}.{tpr,tnr,ppv,npv,f1,support},
  confusion_matrix (rows = true, columns = predicted, order = classes), per-fold
  values and their mean ± sd, the settings and data fingerprint;
- ``predictions.csv``: out-of-fold path, group, fold, true, predicted, prob_<class>;
- ``confusion.png`` (counts, coloured by row share), ``curves.png`` (per-fold
  training loss and validation macro-F1 by epoch) and ``reliability.png`` (the
  reliability diagram before and after temperature scaling);
- ``report.md``: the human-readable report linking the figures.

``write_compare_report(comparison, DIR)`` writes each architecture's CV report in
``DIR/<arch>/`` plus ``compare.json`` and ``compare.md``. Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List

import numpy as np

from .atomic import atomic_path, write_text_atomic
from .evaluation import Comparison, CVResult
from .reports import write_json


def _savefig(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def draw_confusion(fig, cm, classes: List[str], title: str = "") -> None:
    """Draw a confusion-matrix heat map on ``fig`` (rows = true): colour = share of the true class, text = count.

    Used for the report PNG and the GUI's live view alike.
    """
    cm = np.asarray(cm)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{100 * share[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (out-of-fold)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")


def draw_curves(fig, histories, best_epochs=None, title_suffix: str = "") -> None:
    """Training loss and validation macro-F1 by epoch, one line per run (fold) in ``histories``."""
    from matplotlib.ticker import MaxNLocator

    a1, a2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    best_epochs = best_epochs or [0] * len(histories)
    for i, (hist, best) in enumerate(zip(histories, best_epochs)):
        ep = [h.epoch for h in hist]
        label = f"fold {i + 1}" if len(histories) > 1 else None  # one run: no legend to read
        a1.plot(ep, [h.train_loss for h in hist], label=label)
        a2.plot(ep, [h.val_macro_f1 for h in hist], label=label)
        if best:
            a2.plot([best], [hist[best - 1].val_macro_f1], "k.", ms=8)
    a1.set(xlabel="epoch", ylabel="training loss", title="training loss" + title_suffix)
    a2.set(xlabel="epoch", ylabel="macro-F1", title="validation macro-F1 (dot = kept epoch)", ylim=(0, 1.02))
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if len(histories) > 1 and any(histories):
        a2.legend(fontsize=7, loc="lower right")
    elif not any(histories):
        for a in (a1, a2):
            a.text(0.5, 0.5, "no epochs (not an iterative model)", ha="center", va="center", transform=a.transAxes)


def plot_confusion(cm, classes: List[str], path: Path, title: str = "") -> Path:
    from matplotlib.figure import Figure

    k = len(classes)
    fig = Figure(figsize=(1.2 + 0.9 * k, 1.0 + 0.8 * k))
    draw_confusion(fig, cm, classes, title)
    _savefig(fig, path)
    return path


def plot_curves(result: CVResult, path: Path) -> Path:
    """Per-fold training loss and validation macro-F1 by epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    draw_curves(fig, [f.history for f in result.fold_results], [f.best_epoch for f in result.fold_results],
                f" ({result.arch})")
    _savefig(fig, path)
    return path


def plot_reliability(result: CVResult, path: Path) -> Path:
    """Reliability diagram: accuracy against confidence, before and after temperature scaling."""
    from matplotlib.figure import Figure

    from .calibration import reliability_curve

    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    m = result.evaluated
    cal = result.calibration_dict()
    for probs, label, style in ((result.uncalibrated, "before", "o-"), (result.probabilities, "after", "s-")):
        if probs is None or not m.any():
            continue
        curve = reliability_curve(probs[m], result.labels[m])
        ece = cal.get(f"ece_{label}")
        ax.plot(curve["confidence"], curve["accuracy"], style, ms=4,
                label=f"{label} temperature scaling (ECE {ece:.3f})" if ece is not None else label)
    ax.set(xlabel="confidence (max probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
           title="reliability (out-of-fold)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    _savefig(fig, path)
    return path


def predictions_csv(result: CVResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "group", "fold", "true", "predicted"] + [f"prob_{c}" for c in result.classes])
    ev = result.evaluated
    for i, s in enumerate(result.samples):
        if not ev[i]:
            continue
        p = result.probabilities[i]
        w.writerow([s.relpath, s.group or "", int(result.folds[i]) + 1, result.classes[result.labels[i]],
                    result.classes[int(p.argmax())], *[f"{v:.6f}" for v in p]])
    return buf.getvalue()


def _pct(v) -> str:
    return f"{100 * v:.1f}"


def markdown_report(result: CVResult, m: Dict) -> str:
    s = m["settings"]
    lines = [
        f"# Cross-validation: `{result.arch}`",
        "",
        *_flag_lines(m.get("flags", [])),
        f"- data: `{s['root']}` ({m['n_samples']} particles, {len(result.classes)} classes, fingerprint "
        f"`{s['data_fingerprint'][:16]}…`)",
        f"- {m['n_folds']}-fold {'group-aware ' if s['group_aware'] else ''}stratified CV"
        + ("" if m["complete"] else " — **stopped early: not all folds ran**"),
        f"- input: mode `{s['preprocess']['mode']}`, {s['preprocess']['size']}×{s['preprocess']['size']} px, "
        f"normalisation `{s['preprocess']['normalize']}`",
        f"- training: {_settings_line(s['training'])}",
        f"- time: {m['seconds']:.0f} s",
        "",
        f"**Accuracy {_pct(m['accuracy'])} %, macro-F1 {m['macro_f1']:.3f}** (pooled out-of-fold); per fold "
        f"macro-F1 {m['mean_sd']['macro_f1']['mean']:.3f} ± {m['mean_sd']['macro_f1']['sd']:.3f}, accuracy "
        f"{_pct(m['mean_sd']['accuracy']['mean'])} ± {_pct(m['mean_sd']['accuracy']['sd'])} % (mean ± sd).",
        "",
        "| class | support | TPR (recall) | TNR | PPV (precision) | NPV | F1 | F1 per fold (mean ± sd) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result.classes:
        p = m["per_class"][c]
        f = m["mean_sd"]["per_class"][c]["f1"]
        lines.append(f"| {c} | {p['support']} | {p['tpr']:.3f} | {p['tnr']:.3f} | {p['ppv']:.3f} | {p['npv']:.3f} | "
                     f"{p['f1']:.3f} | {f['mean']:.3f} ± {f['sd']:.3f} |")
    lines += ["", "## Beside the baselines (same folds, same metrics)", "",
              "| model | accuracy | balanced accuracy | macro-F1 |", "|---|---:|---:|---:|",
              f"| **{result.arch}** | {_pct(m['accuracy'])} % | {_pct(m['balanced_accuracy'])} % | {m['macro_f1']:.3f} |"]
    names = {"majority": "majority class (always the training fold's most frequent class)",
             "svm": "SVM on handcrafted features"}
    for name, b in m.get("baselines", {}).items():
        lines.append(f"| {names.get(name, name)} | {_pct(b['accuracy'])} % | {_pct(b['balanced_accuracy'])} % | "
                     f"{b['macro_f1']:.3f} |")
    cal = m.get("calibration") or {}
    if cal:
        temps = ", ".join(f"{t:.2f}" for t in cal["temperatures"] if t is not None)
        lines += ["", "## Calibration", "",
                  f"Expected calibration error of the out-of-fold probabilities: {cal['ece_before']:.3f} before, "
                  f"**{cal['ece_after']:.3f} after** temperature scaling (temperature per fold: {temps}; fitted "
                  "on each fold's inner validation split).", "", "![reliability diagram](reliability.png)"]
    if m.get("without_tta"):
        w = m["without_tta"]
        lines += ["", f"Test-time augmentation (mean over the 8 rotations/reflections): accuracy {_pct(w['accuracy'])} % "
                      f"→ {_pct(m['accuracy'])} %, macro-F1 {w['macro_f1']:.3f} → {m['macro_f1']:.3f} (same models)."]
    kept = [f.get("kept_arch") for f in m["folds"]]
    if s["arch"] == "auto":
        lines += ["", f"`auto` kept per fold (higher inner-validation macro-F1): {', '.join(map(str, kept))}."]
        feats = [f["features"] for f in m["folds"] if f.get("features")]
        if feats:
            informative = sum(1 for f in feats if f["informative"])
            shares = ", ".join(f"{f['above_chance']:.2f}" for f in feats)
            lines[-1] += (f" The SVM on handcrafted features got {shares} "
                          f"of the way from chance to perfect balanced accuracy on the inner validation splits "
                          f"(threshold {feats[0]['threshold']}): the network saw the features in {informative} of "
                          f"{len(feats)} folds and the image alone in the others.")
    lines += ["", "![confusion matrix](confusion.png)", "", "![learning curves](curves.png)", "",
              "| fold | train | test | kept epoch | stopped | accuracy | macro-F1 |", "|---:|---:|---:|---:|---|---:|---:|"]
    for f in m["folds"]:
        lines.append(f"| {f['fold'] + 1} | {f['n_train']} | {f['n_test']} | {f['best_epoch'] or '-'} | {f['stopped']} | "
                     f"{_pct(f['accuracy'])} % | {f['macro_f1']:.3f} |")
    used = sorted({f["precision"] for f in m["folds"] if f.get("precision")})
    if used:
        lines += ["", f"Training steps ran in {' and '.join(used)}"
                      + (" (bf16 autocast: weights, optimiser and predictions in float32)." if "bfloat16" in used else ".")]
    plans = [f"fold {f['fold'] + 1}: {f['epoch_plan']}" for f in m["folds"] if f.get("epoch_plan")]
    if plans:
        lines += ["", "Epochs of large, imbalanced training parts (`majority_ratio`):", ""] + [f"- {p}" for p in plans]
    if s.get("skipped_files"):
        lines += ["", f"{len(s['skipped_files'])} file(s) could not be read and were left out:", ""]
        lines += [f"- {e}" for e in s["skipped_files"][:50]]
    return "\n".join(lines) + "\n"


def _flag_lines(flags) -> List[str]:
    if not flags:
        return []
    return ["> **Warnings** — read these before using the figures below:", ">",
            *[f"> - {f['message']} (`{f['code']}`)" for f in flags], ""]


def _settings_line(t: Dict) -> str:
    if t["arch"] == "svm":
        return "RBF SVM on handcrafted features, C and gamma by inner 3-fold CV, class-balanced"
    decided = f" ({t['epoch_decision']})" if t.get("epoch_decision") else ""
    return (f"{t['epochs']} epochs max (patience {t['patience']}){decided}, batch {t['batch_size']}, lr {t['lr']}, "
            f"weight decay {t['weight_decay']}, label smoothing {t['label_smoothing']}, balance `{t['balance']}`, "
            f"augmentation {'on' if t['augment'] else 'off'}, seed {t['seed']}"
            + (f", largest class at most {t['majority_ratio']:g}x the others per epoch" if t.get("majority_ratio") else "")
            + (f", precision `{t['precision']}`" if t.get("precision") else ""))


def write_cv_report(result: CVResult, out_dir) -> Dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = result.metrics_dict()
    paths = {
        "metrics": write_json(out / "metrics.json", m),
        "predictions": write_text_atomic(out / "predictions.csv", predictions_csv(result)),
        "confusion": plot_confusion(m["confusion_matrix"], result.classes, out / "confusion.png",
                                    f"{result.arch}: out-of-fold confusion matrix"),
        "curves": plot_curves(result, out / "curves.png"),
        "reliability": plot_reliability(result, out / "reliability.png"),
    }
    paths["report"] = write_text_atomic(out / "report.md", markdown_report(result, m))
    return paths


def _dirname(arch: str) -> str:
    return arch.replace("+", "_plus_")


def write_compare_report(comparison: Comparison, out_dir) -> Dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in comparison.results:
        write_cv_report(r, out / _dirname(r.arch))
    table = comparison.table()
    classes = comparison.results[0].classes if comparison.results else []
    data = {"table": table, "tests": comparison.tests,
            "folds": comparison.results[0].settings["folds"] if comparison.results else 0,
            "classes": classes}
    flagged = [(r.arch, f) for r in comparison.results for f in r.flags()]
    lines = ["# Model comparison (identical folds)", "",
             *_flag_lines([{"code": f["code"], "message": f"`{a}`: {f['message']}"} for a, f in flagged]),
             "| model | accuracy | macro-F1 (pooled) | macro-F1 per fold (mean ± sd) | "
             + " | ".join(f"F1 {c}" for c in classes) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(classes)]
    for row in table:
        lines.append(f"| [`{row['arch']}`]({_dirname(row['arch'])}/report.md) | {_pct(row['accuracy'])} % | "
                     f"{row['macro_f1']:.3f} | {row['macro_f1_fold_mean']:.3f} ± {row['macro_f1_fold_sd']:.3f} | "
                     + " | ".join(f"{row['per_class_f1'][c]:.3f}" for c in classes) + " |")
    if comparison.results:
        first = comparison.results[0].metrics_dict()
        for name, b in first.get("baselines", {}).items():
            label = "majority class" if name == "majority" else "SVM on handcrafted features (baseline)"
            lines.append(f"| {label} | {_pct(b['accuracy'])} % | {b['macro_f1']:.3f} | — | "
                         + " | ".join(f"{b['per_class'][c]['f1']:.3f}" for c in classes) + " |")
    lines += ["", "## Paired tests", "",
              "| A | B | A right, B wrong | B right, A wrong | McNemar p | fold macro-F1 difference (A−B) | paired t p | verdict |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for t in comparison.tests:
        pt = t["fold_macro_f1_ttest"]
        p_t = "—" if pt["p_value"] is None else f"{pt['p_value']:.3g}"
        lines.append(f"| {t['a']} | {t['b']} | {t['mcnemar']['a_only_correct']} | {t['mcnemar']['b_only_correct']} | "
                     f"{t['mcnemar']['p_value']:.3g} | {pt['mean_difference']:+.3f} | {p_t} | {t['verdict']} |")
    lines += ["", "McNemar's exact test compares per-particle correctness on the same out-of-fold predictions; the "
              "paired t-test compares per-fold macro-F1 (few folds: low power). Significance level "
              f"{comparison.tests[0]['alpha'] if comparison.tests else 0.05}."]
    return {"json": write_json(out / "compare.json", data),
            "report": write_text_atomic(out / "compare.md", "\n".join(lines) + "\n")}
