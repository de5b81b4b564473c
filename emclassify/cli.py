"""The ``emclassify`` command line: a thin layer over the Python API.

Subcommands: ``batch`` (classify a folder -> CSV + summary), ``info`` (print a
model card), ``synth`` (write synthetic liposomes), ``models`` (the
architecture table). ``emclassify --version`` names the active op backend.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from ._version import __version__


def _fmt_seconds(s: Optional[float]) -> str:
    if s is None:
        return "--:--"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class ProgressBar:
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a terminal."""

    def __init__(self, label: str, stream=None, enabled: Optional[bool] = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self._last = 0.0

    def update(self, done: int, total: int, rate: float, eta: Optional[float], force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and done < total:
            return
        self._last = now
        width = 30
        frac = done / total if total else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        self.stream.write(
            f"\r{self.label} [{bar}] {done}/{total} {100 * frac:5.1f}%  {rate:6.1f} img/s  ETA {_fmt_seconds(eta)} "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\n")
            self.stream.flush()


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


def cmd_batch(args) -> int:
    from .batch import EXIT_NOTHING_RAN, BatchError, run_batch
    from .reports import format_summary

    bar = ProgressBar("classifying")
    try:
        outcome = run_batch(
            args.folder,
            model=args.model,
            out=args.out,
            batch_size=args.batch_size,
            device=args.device,
            resume=args.resume,
            on_batch=lambda b: bar.update(b.done, b.total, b.rate, b.eta),
            workers=args.workers,
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
        print(f"wrote {outcome.csv_path}\nwrote {outcome.summary_path}")
    if not s["complete"]:
        print("interrupted: results so far were written; rerun with --resume to continue", file=sys.stderr)
    return outcome.exit_code


def cmd_info(args) -> int:
    from .modelfile import ModelFileError, file_sha256, format_card, read_card

    try:
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

    props = None
    if args.proportions:
        try:
            props = [float(p) for p in args.proportions.split(",")]
        except ValueError:
            print(f"emclassify synth: --proportions must be comma-separated numbers, got {args.proportions!r}",
                  file=sys.stderr)
            return 2
    bar = ProgressBar("generating")
    t0 = time.perf_counter()

    def progress(done, total):
        el = time.perf_counter() - t0
        rate = done / el if el > 0 else 0.0
        bar.update(done, total, rate, (total - done) / rate if rate else None)

    try:
        prov = synth.generate(Path(args.out), args.problem, args.n, seed=args.seed, proportions=props,
                              progress=progress)
    except ValueError as exc:
        print(f"emclassify synth: {exc}", file=sys.stderr)
        return 2
    bar.close()
    counts = ", ".join(f"{c} {n}" for c, n in prov["counts"].items())
    print(f"wrote {args.n} {args.problem} particles ({counts}) to {args.out}")
    return 0


def cmd_models(args) -> int:
    from .models import architecture_table

    print(architecture_table(input_size=args.size, num_classes=args.classes))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .batch import EXIT_CODES

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
        "row per file plus <csv stem>.summary.json.",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("folder", help="folder of particle images (TIFF, PNG, JPEG, BMP)")
    b.add_argument("--model", "-m", help="model file (default: the bundled lamellarity model)")
    b.add_argument("--out", "-o", help="output CSV (default: ./<folder name>.emclassify.csv)")
    b.add_argument("--batch-size", "-b", type=int, default=64, help="images per batch (default 64)")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default auto: GPU if present")
    b.add_argument("--resume", action="store_true", help="skip files already in the output CSV (same model)")
    b.add_argument("--workers", type=int, default=4, help="image-decoding threads (default 4)")
    b.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    b.set_defaults(func=cmd_batch)

    i = sub.add_parser("info", help="print a model file's card", description="Print a model file's card.")
    i.add_argument("model", help="model file (.safetensors)")
    i.add_argument("--json", action="store_true", help="print the card as JSON")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser(
        "synth",
        help="write synthetic TEM liposome images with masks and a manifest",
        description="Write OUT/images/<class>/*.tif, OUT/masks/<class>/*.tif and OUT/manifest.csv.",
    )
    s.add_argument("out", help="output folder")
    s.add_argument("--problem", choices=["lamellarity", "encapsulation"], default="lamellarity")
    s.add_argument("--n", type=int, default=1000, help="number of particles (default 1000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--proportions", help="class proportions in class order, e.g. 0.5,0.4,0.1 (default: the seed paper's)")
    s.set_defaults(func=cmd_synth)

    m = sub.add_parser("models", help="list the architectures (markdown table)",
                       description="Print every registered architecture with parameters and MFLOP.")
    m.add_argument("--size", type=int, default=64, help="input size for the figures (default 64)")
    m.add_argument("--classes", type=int, default=3, help="number of classes for the figures (default 3)")
    m.set_defaults(func=cmd_models)
    return p


def main(argv: Optional[List[str]] = None) -> int:
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
