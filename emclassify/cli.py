"""The ``emclassify`` command line: a thin layer over the Python API.

Subcommands: ``batch`` (classify a folder -> CSV + summary; ``--micrographs``: one row per particle
found), ``find-eval`` (score particle finders on outlined micrographs; ``--folds``: cross-validate
the learned one beside the classical one), ``train-finder`` (train the learned finder), ``info``
(print a model or finder card), ``synth`` (write synthetic liposomes), ``train`` (train a model),
``cv`` (cross-validation report), ``compare`` (architectures on identical folds),
``gui`` (the desktop app), ``models`` (the architecture table), ``bench`` (native
speed). ``emclassify --version`` names the active op backend. The parser is built
from :mod:`emclassify.defaults` without importing torch, so ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from ._version import __version__
from .defaults import AUTO, EPOCH_BUDGET


class ProgressBar:
    """A progress bar on stderr (tqdm), shown only on a terminal unless ``enabled`` says otherwise.

    update(done, total, rate, eta): absolute position; rate and eta come from the core's own
    measurement (:class:`emclassify.inference.BatchResult`), tqdm only draws.
    """

    def __init__(self, label: str, stream=None, enabled: Optional[bool] = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self._bar = None

    def update(self, done: int, total: int, rate: float, eta: Optional[float], force: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.label, unit="img", file=self.stream, mininterval=0.1,
                             dynamic_ncols=True, leave=True)
        self._bar.total = total
        self._bar.n = done
        self._bar.set_postfix_str(f"{rate:.1f} img/s", refresh=False)
        self._bar.refresh() if force or done >= total else self._bar.update(0)

    def counter(self):
        """A ``progress(done, total)`` callback that measures rate and ETA from its first call's clock."""
        t0 = time.perf_counter()

        def progress(done: int, total: int) -> None:
            el = time.perf_counter() - t0
            rate = done / el if el > 0 else 0.0
            self.update(done, total, rate, (total - done) / rate if rate else None)

        return progress

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _version_text() -> str:
    import torch

    from ._native import backend_description

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    gpu = ", GPU available" if torch.cuda.is_available() else ""
    return f"emclassify {__version__}\ntorch {torch.__version__} ({cuda}{gpu})\nops backend: {backend_description()}"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_text())
        parser.exit()


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def _positive_int_or_auto(text: str):
    """argparse type: ``auto`` or a whole number >= 1."""
    return AUTO if text.strip().lower() == AUTO else _positive_int(text)


def _majority_ratio(text: str) -> float:
    """argparse type: 0 (off) or a finite number >= 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a number >= 1, got {text!r}") from None
    if not (value == 0 or 1 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a number >= 1, got {text}")
    return value


def _silence_libraries() -> None:
    """--quiet: library warnings and log lines off; emclassify's own errors still go to stderr."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)


def cmd_batch(args) -> int:
    from .batch import EXIT_NOTHING_RAN, BatchError, run_batch
    from .events import BatchClassified
    from .reports import format_summary

    from .defaults import EXIT_USAGE
    from .io.microscope import PixelSizeError, parse_length

    if args.quiet:
        _silence_libraries()
    try:
        pixel_size = parse_length(args.pixel_size) if args.pixel_size else None
    except PixelSizeError as exc:
        print(f"emclassify batch: --pixel-size: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finder = None
    if args.micrographs:
        finder = _finder_from_args(args, "batch")
        if finder is None:
            return EXIT_USAGE
    elif any(v is not None for v in (args.particle_diameter, args.polarity, args.save_crops, args.save_labels,
                                     args.finder_model, args.finder_views)) or args.exclude_border:
        print("emclassify batch: --particle-diameter, --polarity, --exclude-border, --finder-model, --finder-views, "
              "--save-crops and --save-labels apply to whole micrographs: add --micrographs", file=sys.stderr)
        return EXIT_USAGE
    bar = ProgressBar("micrographs" if args.micrographs else "classifying", enabled=False if args.quiet else None)
    try:
        outcome = run_batch(
            args.folder,
            model=args.model,
            out=args.out,
            **({"batch_size": args.batch_size} if args.batch_size else {}),
            device=args.device,
            resume=args.resume,
            progress=lambda e: bar.update(e.batch.done, e.batch.total, e.batch.rate, e.batch.eta)
            if isinstance(e, BatchClassified) else None,
            workers=args.workers,
            allow_outside=args.allow_outside_paths,
            finder=finder,
            pixel_size_nm=pixel_size,
            save_crops=args.save_crops,
            save_labels=args.save_labels,
        )
    except BatchError as exc:
        bar.close()
        print(f"emclassify batch: {exc}", file=sys.stderr)
        return EXIT_NOTHING_RAN
    bar.close()
    s = outcome.summary
    if not args.quiet:
        print(format_summary(s))
        print(f"model: {s['model']['name'] or s['model']['path']} ({s['model']['arch']}, sha256 {s['model']['sha256'][:12]}…)")
        if isinstance(s.get("finding"), dict):
            from .finding import describe_finding

            print(f"finder: {describe_finding(s['finding'])}")
        print(f"wrote {outcome.csv_path}\nwrote {outcome.summary_path}")
        for extra in (s.get("micrograph_table"), (s.get("sizes") or {}).get("histogram")):
            if extra:
                print(f"wrote {outcome.csv_path.with_name(extra)}")
    if not s["complete"]:
        print("interrupted: results so far were written; rerun with --resume to continue", file=sys.stderr)
    return outcome.exit_code


def cmd_info(args) -> int:
    from .modelfile import FINDER_FORMAT_NAME, ModelFileError, file_sha256, format_card, read_card, read_safetensors

    try:
        raw, _ = read_safetensors(args.model, with_tensors=False)
        if isinstance(raw, dict) and raw.get("format") == FINDER_FORMAT_NAME:
            from .finding.finderfile import FinderCard, format_finder_card

            fcard = FinderCard.from_dict(raw, source=str(args.model))
            print(json.dumps(fcard.to_dict(), indent=2) if args.json
                  else format_finder_card(fcard, path=args.model, sha256=file_sha256(args.model)))
            return 0
        card = read_card(args.model)
    except ModelFileError as exc:
        print(f"emclassify info: {exc}", file=sys.stderr)
        return 4
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
    else:
        print(format_card(card, path=args.model, sha256=file_sha256(args.model)))
    return 0


def cmd_synth(args) -> int:
    from . import synth

    if args.n is None:
        args.n = 24 if args.micrographs else 1000
    props = None
    if args.proportions:
        try:
            props = [float(p) for p in args.proportions.split(",")]
        except ValueError:
            print(f"emclassify synth: --proportions must be comma-separated numbers, got {args.proportions!r}",
                  file=sys.stderr)
            return 2
    bar = ProgressBar("generating")
    progress = bar.counter()

    try:
        if args.micrographs:
            prov = synth.generate_micrographs(Path(args.out), args.problem, args.micrographs, seed=args.seed,
                                              side=args.side, per_micrograph=args.n, proportions=props,
                                              progress=progress)
        else:
            prov = synth.generate(Path(args.out), args.problem, args.n, seed=args.seed, proportions=props,
                                  progress=progress)
    except ValueError as exc:
        print(f"emclassify synth: {exc}", file=sys.stderr)
        return 2
    bar.close()
    if args.micrographs:
        print(f"wrote {args.micrographs} {args.side}x{args.side} px micrographs holding {prov['particles']} "
              f"{args.problem} particles to {args.out} (images/, instances/, particles.csv)")
        return 0
    counts = ", ".join(f"{c} {n}" for c, n in prov["counts"].items())
    print(f"wrote {args.n} {args.problem} particles ({counts}) to {args.out}")
    return 0


def _train_config(args):
    from .training import TrainConfig

    return TrainConfig(arch=getattr(args, "arch", None) or TrainConfig.arch, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       label_smoothing=args.label_smoothing, dropout=args.dropout, patience=args.patience,
                       val_fraction=args.val_fraction, augment=not args.no_augment, tta=not args.no_tta,
                       balance=args.balance, majority_ratio=args.majority_ratio,
                       seed=args.seed, device=args.device, precision=args.precision)


def _load_dataset(path, allow_outside: bool = False):
    from .io import DatasetError, load_dataset

    try:
        ds = load_dataset(path, allow_outside=allow_outside)
    except DatasetError as exc:
        print(f"emclassify: {exc}", file=sys.stderr)
        return None
    counts = ", ".join(f"{c} {n}" for c, n in ds.class_counts().items())
    groups = f", {len(set(ds.groups))} groups" if ds.has_groups else ""
    print(f"dataset {ds.root} ({ds.source}): {len(ds)} images{groups}: {counts}")
    for w in ds.warnings:
        print(f"note: {w}")
    return ds


class _ProgressPrinter:
    """Prints the core's progress events (:mod:`emclassify.events`): a decoding bar, one line per
    epoch with the remaining time of the whole command (an upper bound: early stopping may end
    sooner), one line per finished fold. show_arch: prefix lines with the architecture (compare)."""

    def __init__(self, show_arch: bool = False):
        self.show_arch = show_arch
        self.decoding = None

    def _where(self, arch: str, fold, folds) -> str:
        parts = ([arch] if self.show_arch else []) + ([f"fold {fold + 1}/{folds}"] if fold is not None else [])
        return " ".join(parts) + "  " if parts else ""

    def __call__(self, event) -> None:
        from .events import Decoding, EpochEnded, FoldEnded, format_seconds

        if isinstance(event, Decoding):
            self.decoding = self.decoding or _load_bar("decoding")
            self.decoding(event.done, event.total)
        elif isinstance(event, EpochEnded):
            log = event.log
            print(f"{self._where(event.arch, event.fold, event.folds)}epoch {log.epoch:3d}/{log.epochs}  "
                  f"loss {log.train_loss:.4f}  val loss {log.val_loss:.4f}  val macro-F1 {log.val_macro_f1:.4f}  "
                  f"({log.seconds:.1f} s, remaining ≤ {format_seconds(event.remaining_s)})", flush=True)
        elif isinstance(event, FoldEnded):
            m = event.metrics
            print(f"{self._where(event.arch, event.fold, event.folds).rstrip()}: test accuracy {m['accuracy']:.4f}, "
                  f"macro-F1 {m['macro_f1']:.4f}", flush=True)


def _load_bar(label: str):
    bar = ProgressBar(label)
    t0 = time.perf_counter()

    def update(done, total):
        el = time.perf_counter() - t0
        rate = done / el if el > 0 else 0.0
        bar.update(done, total, rate, (total - done) / rate if rate else None)
        if done >= total:
            bar.close()

    return update


def _prepare(args, command: str):
    """Settings and dataset for train/cv/compare: ``(pcfg, tcfg, dataset, input decision)``, or an exit code."""
    from .input_decision import decide_preprocess, describe

    try:
        tcfg = _train_config(args)
    except ValueError as exc:
        print(f"emclassify {command}: {exc}", file=sys.stderr)
        return 2
    ds = _load_dataset(args.dataset, args.allow_outside_paths)
    if ds is None:
        return 4
    try:
        pcfg, decision = decide_preprocess(ds.samples, mode=args.mode, size=args.size, margin=args.margin,
                                           normalize=args.normalize, mean=args.mean, std=args.std)
    except ValueError as exc:
        print(f"emclassify {command}: {exc}", file=sys.stderr)
        return 2
    print(describe(pcfg, decision))
    if decision.get("note"):
        print(f"note: {decision['note']}", file=sys.stderr)
    return pcfg, tcfg, ds, decision


def _print_flags(flags) -> None:
    from .guardrails import format_flags

    if flags:
        print(format_flags(flags), file=sys.stderr, flush=True)


def _out_file_problem(out, kind: str = "a model file", example: str = "model.safetensors") -> Optional[str]:
    """Why ``--out`` cannot take ``kind`` (checked before the work, so none is lost), or None."""
    import os
    import stat

    path = Path(out)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return f"{path}: cannot use as output: {exc.strerror or exc}"
    if st is not None and stat.S_ISDIR(st.st_mode):
        return f"{path}: is a folder; --out must name {kind}, e.g. {path / example}"
    if st is not None and not stat.S_ISREG(st.st_mode):
        return f"{path}: is not a regular file (a device or pipe); --out must name {kind}"
    if path.parent.exists() and not path.parent.is_dir():
        return f"{path}: {path.parent} is not a folder"
    return None


def cmd_train(args) -> int:
    from .modelfile import format_card
    from .training import train

    problem = _out_file_problem(args.out)
    if problem:
        print(f"emclassify train: {problem}", file=sys.stderr)
        return 2
    prepared = _prepare(args, "train")
    if isinstance(prepared, int):
        return prepared
    pcfg, tcfg, ds, decision = prepared
    try:
        outcome = train(ds, pcfg, tcfg, args.out, progress=_ProgressPrinter(),
                        name=args.name or "", problem=args.problem or "", input_decision=decision)
    except ValueError as exc:
        print(f"emclassify train: {exc}", file=sys.stderr)
        return 4
    for e in outcome.skipped[:20]:
        print(f"skipped: {e}", file=sys.stderr)
    if outcome.fit.stopped == "interrupted":
        print("interrupted: the best model so far was saved", file=sys.stderr)
    print(format_card(outcome.card, path=outcome.path).split("training:")[0].rstrip())
    v = outcome.validation
    base = outcome.card.metrics.get("baselines", {})
    print(f"validation ({v['n']} held-out particles): accuracy {v['accuracy']:.4f}, balanced accuracy "
          f"{v['balanced_accuracy']:.4f}, macro-F1 {v['macro_f1']:.4f}")
    for name, b in base.items():
        print(f"  baseline {name:<9} accuracy {b['accuracy']:.4f}, balanced accuracy {b['balanced_accuracy']:.4f}, "
              f"macro-F1 {b['macro_f1']:.4f}")
    _print_epoch_decision(outcome.card.training)
    _print_training_run({outcome.card.training.get("precision_used")}, [outcome.card.training.get("epoch_plan")])
    sel = outcome.card.metrics.get("selection")
    if sel:
        print(f"auto: kept {sel['kept']} ({sel['rule']}: " + ", ".join(f"{a} {f:.4f}" for a, f in
                                                                      sel["candidates"].items()) + ")")
    cal = outcome.card.metrics.get("calibration") or {}
    if cal:
        print(f"calibration: temperature {cal['temperature']:.3f}, ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f}")
    _print_flags(outcome.flags)
    print(f"wrote {outcome.path}")
    return 0


def _print_epoch_decision(training: Dict) -> None:
    if training.get("epoch_decision"):
        print(f"epochs: {training['epoch_decision']}")


def cmd_cv(args) -> int:
    from .cv_report import write_cv_report
    from .evaluation import cross_validate

    prepared = _prepare(args, "cv")
    if isinstance(prepared, int):
        return prepared
    pcfg, tcfg, ds, decision = prepared
    try:
        result = cross_validate(ds, pcfg, tcfg, k=args.folds, progress=_ProgressPrinter())
    except ValueError as exc:
        print(f"emclassify cv: {exc}", file=sys.stderr)
        return 4
    result.settings["input_decision"] = decision
    paths = write_cv_report(result, args.out)
    m = result.metrics_dict()
    print(f"{args.folds}-fold CV of {tcfg.arch}: accuracy {m['accuracy']:.4f}, balanced accuracy "
          f"{m['balanced_accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
          f"(per fold {m['mean_sd']['macro_f1']['mean']:.4f} ± {m['mean_sd']['macro_f1']['sd']:.4f}) "
          f"in {m['seconds']:.0f} s")
    for name, b in m["baselines"].items():
        print(f"  baseline {name:<9} accuracy {b['accuracy']:.4f}, balanced accuracy {b['balanced_accuracy']:.4f}, "
              f"macro-F1 {b['macro_f1']:.4f}")
    _print_epoch_decision(result.settings["training"])
    _print_training_run({f.get("precision") for f in m["folds"]},
                        [f"fold {f['fold'] + 1}: {f['epoch_plan']}" for f in m["folds"] if f.get("epoch_plan")])
    if m["calibration"]:
        print(f"calibration: ECE {m['calibration']['ece_before']:.3f} -> {m['calibration']['ece_after']:.3f}")
    _print_flags(m["flags"])
    print(f"wrote {paths['report']} (+ metrics.json, predictions.csv, confusion.png, curves.png, reliability.png)")
    return 0 if result.complete else 130


def _print_training_run(precisions, epoch_plans) -> None:
    """What the training steps ran in when it was not plain float32 (--precision), and how epochs drew a
    capped class (--majority-ratio)."""
    if "bfloat16" in precisions:
        print("training steps: bfloat16 autocast (this CPU computes bf16 natively; weights and predictions are "
              "float32; --precision float32 trains in float32)")
    for note in filter(None, epoch_plans):
        print(f"epochs: {note}")


def cmd_compare(args) -> int:
    from .cv_report import write_compare_report
    from .evaluation import compare

    prepared = _prepare(args, "compare")
    if isinstance(prepared, int):
        return prepared
    pcfg, tcfg, ds, decision = prepared
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    try:
        comp = compare(ds, archs, pcfg, tcfg, k=args.folds, progress=_ProgressPrinter(show_arch=True))
    except ValueError as exc:
        print(f"emclassify compare: {exc}", file=sys.stderr)
        return 4
    for r in comp.results:
        r.settings["input_decision"] = decision
    paths = write_compare_report(comp, args.out)
    for row in comp.table():
        print(f"{row['arch']:<24} accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}  "
              f"(per fold {row['macro_f1_fold_mean']:.4f} ± {row['macro_f1_fold_sd']:.4f})")
    if comp.results:
        for name, b in comp.results[0].metrics_dict()["baselines"].items():
            print(f"{'baseline ' + name:<24} accuracy {b['accuracy']:.4f}  macro-F1 {b['macro_f1']:.4f}")
    for t in comp.tests:
        print(f"{t['a']} vs {t['b']}: {t['verdict']}")
    if comp.results:
        _print_epoch_decision(comp.results[0].settings["training"])  # one epoch budget for every network
    for r in comp.results:
        _print_flags([{**f, "message": f"{r.arch}: {f['message']}"} for f in r.flags()])
    print(f"wrote {paths['report']}")
    return 0


def cmd_gui(args) -> int:
    try:
        from emclassify_gui.app import main as gui_main
    except ImportError as exc:
        print(f"emclassify gui: the desktop app needs PySide6 ({exc}); install it with "
              "pip install 'emclassify[gui]'", file=sys.stderr)
        return 4
    return gui_main(args.gui_args)


def cmd_models(args) -> int:
    from .models import architecture_table

    print(architecture_table(input_size=args.size, num_classes=args.classes))
    return 0


def cmd_bench(args) -> int:
    from . import bench
    from .atomic import write_text_atomic
    from .models import list_models

    if args.arch is not None and args.arch not in list_models():
        print(f"emclassify bench: --arch must be one of {', '.join(list_models())}", file=sys.stderr)
        return 2
    cfg = bench.BenchConfig(n_images=args.images, input_size=args.input_size, batch_size=args.batch_size,
                            arch=args.arch, folder=Path(args.folder) if args.folder else None,
                            repeats=args.repeats, try_compile=not args.no_compile)
    try:
        result = bench.run(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (RuntimeError, ValueError) as exc:
        print(f"emclassify bench: {exc}", file=sys.stderr)
        return 1
    result["command"] = "emclassify " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "emclassify bench"
    text = bench.format_markdown(result)
    print(text)
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(result, indent=2) + "\n")
    if args.markdown:
        write_text_atomic(Path(args.markdown), f"Command: `{result['command']}`\n\n{text}\n")
    return 0

def _finder_from_args(args, command: str):
    """The finder named on the command line (``batch``, ``find-eval``), or None after printing why it
    cannot be made."""
    from .finding import make_finder
    from .modelfile import ModelFileError

    views = getattr(args, "finder_views", None)
    if isinstance(views, list):  # find-eval takes several, side by side, in cross-validation only
        if len(views) > 1:
            print(f"emclassify {command}: several --finder-views are compared in cross-validation only "
                  "(add --folds K)", file=sys.stderr)
            return None
        views = views[0]
    try:
        return make_finder(args.finder, diameter_px=args.particle_diameter, polarity=args.polarity,
                           exclude_border=getattr(args, "exclude_border", False) or None,
                           model=getattr(args, "finder_model", None), views=views)
    except (ValueError, ModelFileError) as exc:
        print(f"emclassify {command}: {exc}", file=sys.stderr)
        return None


def _print_finder_scores(label: str, o: Dict, seconds_note: str = "") -> None:
    from .finding.evaluate import error_kinds_text

    iou = "n/a" if o["mean_iou"] is None else f"{o['mean_iou']:.3f}"
    print(f"{label} on {o['micrographs']} micrographs: {o['matched']} of {o['true']} outlined particles "
          f"found at IoU >= 0.5 ({o['found']} found in all)\n  precision {o['precision']:.3f}  recall "
          f"{o['recall']:.3f}  F1 {o['f1']:.3f}  mean IoU of matches {iou}  mean |count error| per micrograph "
          f"{o['count_error_abs_mean'] or 0:.1f}{seconds_note}\n  {error_kinds_text(o)}")


def _print_end_to_end(e: Dict, classifier: str = "") -> None:
    per = ", ".join(f"{c} {v:.3f}" for c, v in e["per_class_f1"].items())
    acc = "n/a" if e["matched_accuracy"] is None else f"{e['matched_accuracy']:.3f}"
    which = f", classifier {classifier}" if classifier else ""
    from .finding.evaluate import on_outlines_text, unoutlined_text

    print(f"  end to end (found and classified vs outlined{which}): macro-F1 {e['macro_f1']:.3f} ({per}); "
          f"classes of the {e['matched_particles']} matched particles: accuracy {acc}, macro-F1 {e['matched_macro_f1']:.3f}")
    for sentence in (on_outlines_text(e), unoutlined_text(e)):
        if sentence:
            print("   " + sentence)


def cmd_find_eval(args) -> int:
    from .finding.evaluate import EvaluationError, evaluate_finder
    from .modelfile import ModelFileError

    problem = _out_file_problem(args.out, "a JSON file", "finder-metrics.json")
    if problem:
        print(f"emclassify find-eval: {problem}", file=sys.stderr)
        return 2
    if args.train_classifier and not args.folds:
        print("emclassify find-eval: --train-classifier needs --folds (a classifier is trained per fold)",
              file=sys.stderr)
        return 2
    classifier = None
    if args.classifier:
        from .inference import Classifier

        try:
            classifier = Classifier.from_file(args.classifier, device="cpu")
        except ModelFileError as exc:
            print(f"emclassify find-eval: {exc}", file=sys.stderr)
            return 4
    if args.folds:
        return _find_eval_folds(args, classifier)
    finder = _finder_from_args(args, "find-eval")
    if finder is None:
        return 2
    bar = ProgressBar("micrographs")
    progress = bar.counter()

    try:
        result = evaluate_finder(Path(args.folder), finder, overlays=args.overlays, progress=progress,
                                 classifier=classifier)
    except EvaluationError as exc:
        bar.close()
        print(f"emclassify find-eval: {exc}", file=sys.stderr)
        return 4
    bar.close()
    _print_finder_scores(f"{args.finder} finder", result["overall"], f"  ({result['megapixels_per_s']} Mpx/s)")
    if "end_to_end" in result:
        _print_end_to_end(result["end_to_end"])
    for w in result.get("warnings", []):
        print(f"  WARNING: {w}", file=sys.stderr)
    for e in result["errors"]:
        print(f"  error: {e['micrograph']}: {e['error']}", file=sys.stderr)
    _write_finder_metrics(args, result)
    return 3 if result["errors"] else 0


def _write_finder_metrics(args, result) -> None:
    """metrics JSON and its Markdown report (same stem, .md) next to it, atomically."""
    from .atomic import write_text_atomic
    from .finding.evaluate import report_markdown

    out = Path(args.out)
    write_text_atomic(out, json.dumps(result, indent=2, default=str) + "\n")
    report = out.with_suffix(".md")
    write_text_atomic(report, report_markdown(result, args.overlays))
    print(f"wrote {out} and {report.name}")


def _find_eval_folds(args, classifier) -> int:
    """``find-eval --folds K``: the learned finder trained per fold beside the classical one."""
    from .events import EpochEnded, FinderFoldEnded, FinderStep, format_seconds
    from .finding.evaluate import EvaluationError, cross_validate_finders
    from .finding.training import FinderTrainingError

    if args.finder != "classical" or args.finder_model:
        print("emclassify find-eval: --folds trains the learned finder per fold and compares it with the classical "
              "one; --finder/--finder-model do not apply", file=sys.stderr)
        return 2
    learned_views = args.finder_views or [1]
    args.finder_views = None  # they are the learned finder's; the classical one is made below
    classical = _finder_from_args(args, "find-eval")  # the classical finder: checked just above
    if classical is None:
        return 2
    settings = _finder_settings(args)
    if settings is None:
        return 2

    def progress(ev):
        if isinstance(ev, FinderStep) and (ev.step % 50 == 0 or ev.step == ev.steps):
            print(f"fold {ev.fold + 1}/{ev.folds}  step {ev.step}/{ev.steps}  loss {ev.loss:.3f}  "
                  f"remaining {format_seconds(ev.remaining_s)}", flush=True)
        elif isinstance(ev, EpochEnded):
            print(f"fold {ev.fold + 1}/{ev.folds}  classifier on found particles: epoch {ev.log.epoch}/"
                  f"{ev.log.epochs}  val macro-F1 {ev.log.val_macro_f1:.4f}  ({ev.log.seconds:.1f} s)", flush=True)
        elif isinstance(ev, FinderFoldEnded):
            for name in ev.finders:
                o = ev.row[name]
                e2e = "".join(f"  end to end ({c}) {v:.3f}" for c, v in o.get("end_to_end_macro_f1", {}).items())
                print(f"fold {ev.fold + 1}/{ev.folds}  {name}: F1 {o['f1']:.3f}  mean IoU {o['mean_iou'] or 0:.3f}{e2e}",
                      flush=True)

    try:
        result = cross_validate_finders(Path(args.folder), folds=args.folds, settings=settings, classical=classical,
                                        classifier_for=(lambda names: {"given": classifier}) if classifier else None,
                                        train_classifier=args.train_classifier, progress=progress,
                                        overlays=args.overlays, learned_views=learned_views)
    except (EvaluationError, FinderTrainingError) as exc:
        print(f"emclassify find-eval: {exc}", file=sys.stderr)
        return 4
    for name in result["finders"]:
        if result[name]["overall"] is None:
            continue
        _print_finder_scores(f"{name.replace('_', ' ')} finder, {args.folds}-fold by micrograph",
                             result[name]["overall"])
        for which, e in result[name].get("end_to_end_by_classifier", {}).items():
            _print_end_to_end(e, which)
    for row in result["per_fold"]:
        for flag in row["flags"]:
            print(f"  fold {row['fold']}: {flag}", file=sys.stderr)
    for e in result["errors"]:
        print(f"  error: {e['micrograph']}: {e['error']}", file=sys.stderr)
    _write_finder_metrics(args, result)
    return 3 if result["errors"] else 0


def _finder_settings(args):
    from .finding.training import FinderTrainSettings

    try:
        return FinderTrainSettings(steps=args.steps, batch=args.batch, crop=args.crop, val_fraction=args.val_fraction,
                                   seed=args.seed, device=args.device, precision=args.precision)
    except ValueError as exc:
        print(f"emclassify: {exc}", file=sys.stderr)
        return None


def cmd_train_finder(args) -> int:
    from .events import FinderStep
    from .finding.evaluate import EvaluationError
    from .finding.finderfile import format_finder_card, save_finder
    from .finding.training import FinderTrainingError, train_finder

    settings = _finder_settings(args)
    if settings is None:
        return 2
    problem = _out_file_problem(args.out)
    if problem:
        print(f"emclassify train-finder: {problem}", file=sys.stderr)
        return 2
    bar = ProgressBar("training")

    def progress(ev):
        if isinstance(ev, FinderStep):
            bar.update(ev.step, ev.steps, None, None)

    try:
        loaded, errors = train_finder(Path(args.folder), settings, progress=progress)
    except (EvaluationError, FinderTrainingError) as exc:
        bar.close()
        print(f"emclassify train-finder: {exc}", file=sys.stderr)
        return 4
    bar.close()
    for e in errors:
        print(f"  error: {e['micrograph']}: {e['error']} (left out)", file=sys.stderr)
    path = save_finder(Path(args.out), loaded.net, loaded.card)
    if loaded.card.training.get("stopped") == "interrupted":
        print("interrupted: the network as trained so far was saved (the card says so)", file=sys.stderr)
    print(format_finder_card(loaded.card, path=path))
    print(f"wrote {path}  (use it with: emclassify batch FOLDER --micrographs --finder learned --finder-model {path})")
    return 3 if errors else 0


OUTLINED_FOLDER_HELP = "folder with images/ and instances/ or a COCO file (e.g. from emclassify synth --micrographs)"
FINDER_VIEWS_HELP = ("learned finder: 8 averages its maps over the micrograph's 8 rotations and reflections "
                     "(outlines closer to drawn ones, 8x its time; default 1)")


def _finder_training_args(parser) -> None:
    from .defaults import FINDER_TRAINING as S, PRECISIONS

    g = parser.add_argument_group("learned finder training")
    g.add_argument("--steps", type=_positive_int, default=S['steps'], help=f"optimisation steps (default {S['steps']})")
    g.add_argument("--batch", type=_positive_int, default=S['batch'], help=f"crops per step (default {S['batch']})")
    g.add_argument("--crop", type=_positive_int, default=S['crop'], help=f"crop side in px (default {S['crop']})")
    g.add_argument("--val-fraction", type=float, default=S['val_fraction'],
                   help="share of micrographs held out to choose the seed threshold and to score the finder beside the "
                        f"classical one on the card (default {S['val_fraction']}: all train it; measure it with "
                        "find-eval --folds)")
    g.add_argument("--seed", type=int, default=S['seed'], help=f"default {S['seed']}")
    g.add_argument("--device", default=S['device'], choices=["auto", "cpu", "cuda"],
                   help=f"where the network trains (default {S['device']}: a CUDA GPU if present)")
    g.add_argument("--precision", default=S['precision'], choices=PRECISIONS,
                   help=f"dtype of the training steps' forward pass (default {S['precision']}; auto: bfloat16 "
                        "autocast on a CPU with native bf16). The finder's card records what ran")


def build_parser() -> argparse.ArgumentParser:
    from .defaults import DEFAULT_FINDER, EXIT_CODES, FINDER_NAMES, FINDER_VIEWS as VIEW_CHOICES, POLARITIES

    p = argparse.ArgumentParser(
        prog="emclassify",
        description="Classify transmission-EM particle images and keep auditable CSV records.",
    )
    p.add_argument("--version", action=_VersionAction, help="show versions and the active ops backend, then exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    codes = "\n".join(f"  {k:>3}  {v}" for k, v in EXIT_CODES.items())
    b = sub.add_parser(
        "batch",
        help="classify every image under a folder into a CSV lab record",
        description="Classify every image under FOLDER (recursively; mask files excluded) and write one CSV "
        "row per file plus <csv stem>.summary.json. With --micrographs each file is a whole micrograph: its "
        "particles are found, measured and classified, one CSV row per particle.",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("folder", help="folder of particle images or (--micrographs) whole micrographs "
                                  "(TIFF, PNG, JPEG, BMP, MRC, DM3/DM4, EMD, SER)")
    b.add_argument("--model", "-m", help="model file (default: the bundled lamellarity model)")
    b.add_argument("--out", "-o", help="output CSV (default: ./<folder name>.emclassify.csv)")
    b.add_argument("--batch-size", "-b", type=_positive_int, default=None,
                   help="images per batch (default 64; lowered automatically for very large model inputs)")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default auto: GPU if present")
    b.add_argument("--resume", action="store_true", help="skip files already in the output CSV (same model)")
    b.add_argument("--workers", type=_positive_int, default=None,
                   help="image-decoding threads (default: half the CPUs, 1 to 4)")
    b.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    b.add_argument("--allow-outside-paths", action="store_true",
                   help="let a manifest.csv in FOLDER name masks outside FOLDER (refused by default)")
    b.add_argument("--pixel-size", metavar="LENGTH",
                   help="pixel size, e.g. 0.52nm or 5.2A (default: from each file's metadata; sizes in nm need it)")
    m = b.add_argument_group("whole micrographs (one CSV row per particle found)")
    m.add_argument("--micrographs", action="store_true",
                   help="the files are whole micrographs: find the particles in each, then classify each particle")
    m.add_argument("--finder", default=DEFAULT_FINDER, choices=FINDER_NAMES,
                   help=f"particle finder (default {DEFAULT_FINDER})")
    m.add_argument("--finder-model", metavar="FILE", help="the learned finder's model file (from train-finder)")
    m.add_argument("--particle-diameter", type=float, default=None, metavar="PX",
                   help="expected particle diameter in pixels (default: estimated per micrograph)")
    m.add_argument("--polarity", choices=POLARITIES, default=None,
                   help="particles darker (bright-field TEM, cryo-EM) or brighter (negative stain) than their "
                        "surroundings (default: dark for the classical finder; for the learned one, the contrast of "
                        "its training particles: a micrograph of the other is inverted)")
    m.add_argument("--exclude-border", action="store_true",
                   help="drop particles cut by the micrograph's edge or by pixels that hold no value (NaN; default: keep them, with a warning)")
    m.add_argument("--finder-views", type=int, choices=VIEW_CHOICES, default=None, help=FINDER_VIEWS_HELP)
    m.add_argument("--save-crops", metavar="DIR",
                   help="write every particle as image + mask + manifest.csv (the layout train and review read)")
    m.add_argument("--save-labels", metavar="DIR", help="write each micrograph's instance labels as a TIFF")
    b.set_defaults(func=cmd_batch)

    fe = sub.add_parser(
        "find-eval", help="measure a particle finder on micrographs with outlined particles",
        description="Run a particle finder on FOLDER/images/* and score it against the outlined particles "
        "(FOLDER/instances/* instance label images, or a COCO file such as FOLDER/annotations.coco.json): "
        "precision, recall and F1 at IoU >= 0.5, mean IoU of matches, count error per micrograph. Writes the "
        "metrics JSON and a Markdown report beside it.")
    fe.add_argument("folder", help=OUTLINED_FOLDER_HELP)
    fe.add_argument("--finder", default=DEFAULT_FINDER, choices=FINDER_NAMES, help=f"default {DEFAULT_FINDER}")
    fe.add_argument("--finder-model", metavar="FILE", help="the learned finder's model file (from train-finder)")
    fe.add_argument("--classifier", metavar="MODEL",
                    help="also classify the found particles and score them end to end against FOLDER/particles.csv "
                         "or the COCO categories (a classifier not trained on these micrographs)")
    fe.add_argument("--finder-views", type=int, choices=VIEW_CHOICES, nargs="+", default=None,
                    help=FINDER_VIEWS_HELP + "; with --folds, '1 8' scores the same network both ways side by side")
    fe.add_argument("--folds", type=int, default=None, metavar="K",
                    help="cross-validate instead: train the learned finder on the other micrographs of each of K "
                         "folds and score it beside the classical finder on the held-out ones")
    fe.add_argument("--train-classifier", action="store_true",
                    help="with --folds: per fold, also train a classifier (train's defaults) on the particles the "
                         "fold's learned finder finds in its training micrographs, labelled by the outlined "
                         "particles they match, and score it end to end on the held-out ones")
    _finder_training_args(fe)
    fe.add_argument("--particle-diameter", type=float, default=None, metavar="PX",
                    help="expected particle diameter in px (default: estimated per micrograph)")
    fe.add_argument("--polarity", choices=POLARITIES, default=None,
                    help="particles darker or brighter than their surroundings (as for batch)")
    fe.add_argument("--out", default="finder-metrics.json", help="metrics JSON (default finder-metrics.json)")
    fe.add_argument("--overlays", metavar="DIR", help="write one PNG per micrograph: found red, outlined green")
    fe.set_defaults(func=cmd_find_eval)

    tf = sub.add_parser(
        "train-finder", help="train the learned particle finder on micrographs with outlined particles",
        description="Train a small U-Net to find particles (touching ones separated) on FOLDER/images/* with "
        "FOLDER/instances/* (instance label images) or a COCO file of polygons; whole micrographs are held out "
        "to choose thresholds and to score it beside the classical finder. Writes a safetensors model file with "
        "a card.")
    tf.add_argument("folder", help=OUTLINED_FOLDER_HELP)
    tf.add_argument("--out", "-o", default="finder.safetensors", help="model file (default finder.safetensors)")
    _finder_training_args(tf)
    tf.set_defaults(func=cmd_train_finder)

    i = sub.add_parser("info", help="print a model file's card", description="Print a model file's card.")
    i.add_argument("model", help="model file (.safetensors)")
    i.add_argument("--json", action="store_true", help="print the card as JSON")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser(
        "synth",
        help="write synthetic TEM liposome images with masks and a manifest",
        description="Write OUT/images/<class>/*.tif, OUT/masks/<class>/*.tif and OUT/manifest.csv; with "
        "--micrographs N, whole fields of several particles: OUT/images/*.tif, OUT/instances/*.tif (instance "
        "labels) and OUT/particles.csv.",
    )
    s.add_argument("out", help="output folder")
    s.add_argument("--problem", choices=["lamellarity", "encapsulation", "texture"], default="lamellarity",
                   help="lamellarity or encapsulation liposomes (with masks and surround), or texture: six classes of "
                   "same-shaped 41x41 particles told apart by inner texture only, no masks (particle images only)")
    s.add_argument("--n", type=_positive_int, default=None,
                   help="number of particles (default 1000), or with --micrographs particles per micrograph (default 24)")
    s.add_argument("--micrographs", type=_positive_int, default=None, metavar="N",
                   help="write N whole micrographs with instance labels instead (images/, instances/, particles.csv)")
    s.add_argument("--side", type=_positive_int, default=1024, help="micrograph side in px (default 1024)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--proportions", help="class proportions in class order, e.g. 0.5,0.4,0.1 (default: the published liposome mix, e.g. lamellarity 87/12/0.6 %%)")
    s.set_defaults(func=cmd_synth)

    def training_options(sp, arch: bool = True):
        from types import SimpleNamespace

        from .defaults import (ARCH_NAMES, AUTO_SIZE_RANGE, BALANCE_STRATEGIES, DEFAULT_MARGIN, DEFAULT_MODE, DEFAULT_SIZE,
                               MODES, NORMALIZATIONS, PRECISIONS, TRAIN_DEFAULTS)

        d = SimpleNamespace(**TRAIN_DEFAULTS)
        sp.add_argument("dataset", help="labelled dataset: folder (manifest.csv or one sub-folder per class) or manifest CSV")
        sp.add_argument("--allow-outside-paths", action="store_true",
                        help="accept manifest paths outside the manifest's folder (../, absolute; refused by default)")
        if arch:
            sp.add_argument("--arch", default=d.arch, help=f"architecture (default {d.arch}): {', '.join(ARCH_NAMES)}")
        g = sp.add_argument_group("input")
        g.add_argument("--mode", default=DEFAULT_MODE, choices=(AUTO,) + MODES,
                       help="input mode (default auto: crop when masks exist, else decided from the image sizes; "
                            "the decision is printed and stored in the card)")
        g.add_argument("--size", type=_positive_int_or_auto, default=DEFAULT_SIZE,
                       help=f"square input size in px, or auto (default {DEFAULT_SIZE}: the particles' median size "
                            f"rounded up to a multiple of 8, {AUTO_SIZE_RANGE[0]}-{AUTO_SIZE_RANGE[1]} px; printed "
                            "and stored in the card)")
        g.add_argument("--margin", type=int, default=DEFAULT_MARGIN,
                       help=f"px removed per side by crop/mask without a mask (default {DEFAULT_MARGIN})")
        g.add_argument("--normalize", default="zscore", choices=NORMALIZATIONS, help="default zscore (per image)")
        g.add_argument("--mean", type=float, default=0.0, help="mean for --normalize fixed")
        g.add_argument("--std", type=float, default=1.0, help="std for --normalize fixed")
        t = sp.add_argument_group("training")
        t.add_argument("--epochs", type=_positive_int_or_auto, default=d.epochs,
                       help=f"maximum epochs, or auto (default {d.epochs}: enough for {EPOCH_BUDGET['min_steps']} "
                            f"optimiser steps, {EPOCH_BUDGET['min_epochs']}-{EPOCH_BUDGET['max_epochs']} epochs; "
                            "the choice is printed and stored in the card)")
        t.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help=f"default {d.batch_size}")
        t.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate, one-cycle (default {d.lr})")
        t.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW (default {d.weight_decay})")
        t.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help=f"default {d.label_smoothing}")
        t.add_argument("--dropout", type=float, default=None, help="head dropout (conv: half); default: the architecture's")
        t.add_argument("--patience", type=_positive_int_or_auto, default=d.patience,
                       help=f"early-stopping patience in epochs, or auto (default {d.patience}: a third of the epochs, "
                            f"at least {EPOCH_BUDGET['min_patience']})")
        t.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"held out for early stopping (default {d.val_fraction})")
        t.add_argument("--no-augment", action="store_true", help="switch augmentation off")
        t.add_argument("--no-tta", action="store_true",
                       help="no test-time augmentation (by default predictions average the 8 rotations/reflections)")
        t.add_argument("--balance", default=d.balance, choices=BALANCE_STRATEGIES, help=f"class-imbalance strategy (default {d.balance})")
        t.add_argument("--majority-ratio", type=_majority_ratio, default=d.majority_ratio, metavar="R",
                       help=f"per epoch, draw a class larger than R times all the others together only R times them "
                            f"(a fresh subset each epoch, its loss weight raised to match; never so few that auto's "
                            f"step budget falls short); 0 = every particle every epoch (default {d.majority_ratio:g}; "
                            "not with oversample/undersample)")
        t.add_argument("--seed", type=int, default=d.seed, help="same seed, same data -> same result")
        t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        t.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                       help=f"dtype of the training steps (default {d.precision}: bfloat16 autocast on a CPU with "
                            "native bf16, AVX512_BF16 or AMX; float32 elsewhere). Weights, optimiser and "
                            "predictions stay float32; the card records what ran")

    tr = sub.add_parser("train", help="train a model on a labelled dataset",
                        description="Train a model; hold out a validation split for early stopping; write a model file.")
    training_options(tr)
    tr.add_argument("--out", "-o", required=True, help="model file to write (.safetensors)")
    tr.add_argument("--name", help="model name for its card")
    tr.add_argument("--problem", help="problem name for its card (e.g. lamellarity)")
    tr.set_defaults(func=cmd_train)

    cv = sub.add_parser("cv", help="k-fold cross-validation with a report",
                        description="Stratified (group-aware when the data has groups) k-fold cross-validation.")
    training_options(cv)
    cv.add_argument("--folds", type=_positive_int, default=5, help="default 5")
    cv.add_argument("--out", "-o", required=True, help="output folder (metrics.json, predictions.csv, report.md, PNGs)")
    cv.set_defaults(func=cmd_cv)

    cp = sub.add_parser("compare", help="compare architectures on identical folds with paired tests",
                        description="Cross-validate several architectures on identical folds; paired McNemar and "
                        "per-fold t-tests.")
    training_options(cp, arch=False)
    cp.add_argument("--archs", default="lipnet-fcn,svm", help="comma-separated architectures (default lipnet-fcn,svm)")
    cp.add_argument("--folds", type=_positive_int, default=5, help="default 5")
    cp.add_argument("--out", "-o", required=True, help="output folder")
    cp.set_defaults(func=cmd_compare)

    g = sub.add_parser("gui", help="open the desktop application (same as emclassify-gui)",
                       description="Open the desktop application. Options after 'gui' go to emclassify-gui "
                       "(e.g. --selftest --screenshot shot.png).")
    g.add_argument("gui_args", nargs=argparse.REMAINDER, help="options for emclassify-gui")
    g.set_defaults(func=cmd_gui)

    m = sub.add_parser("models", help="list the architectures (markdown table)",
                       description="Print every registered architecture with parameters and MFLOP.")
    m.add_argument("--size", type=_positive_int, default=64, help="input size for the figures (default 64)")
    m.add_argument("--classes", type=_positive_int, default=3, help="number of classes for the figures (default 3)")
    m.set_defaults(func=cmd_models)

    bn = sub.add_parser(
        "bench", help="measure naive vs tuned PyTorch vs native speed (BENCHMARKS.md)",
        description="Time preprocessing, model and end-to-end classification of one generated TIFF folder "
        "three ways in one run: naive PyTorch, the best tuned plain PyTorch, and emclassify's native path.")
    bn.add_argument("--folder", help="reuse/generate the particle folder here (default: a temporary folder)")
    bn.add_argument("--images", type=_positive_int, default=5000, help="particles to generate (default 5000)")
    bn.add_argument("--arch", help="time this CNN with random weights instead of the bundled model")
    bn.add_argument("--input-size", type=_positive_int, default=64, help="model input side in px (default 64)")
    bn.add_argument("--batch-size", type=_positive_int, default=256, help="images per batch (default 256)")
    bn.add_argument("--repeats", type=_positive_int, default=3, help="timed repeats, best kept (default 3)")
    bn.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (slow to compile)")
    bn.add_argument("--json", help="also write the raw figures here")
    bn.add_argument("--markdown", help="also write the tables here")
    bn.set_defaults(func=cmd_bench)
    return p

def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gui"]:
        # Everything after "gui" belongs to emclassify-gui (argparse would take its --options).
        return cmd_gui(argparse.Namespace(gui_args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0

if __name__ == "__main__":
    sys.exit(main())
