"""Reliability sweep behind docs/RELIABILITY.md: many hostile files in one folder, a batch run killed
with SIGKILL again and again and resumed, and the outcome compared with an uninterrupted run.

    python benchmarks/reliability_sweep.py --files 2000 --kills 20 [--model M] [--work DIR]

Prints a JSON summary: files by kind, rows by status, kills survived, tracebacks seen, peak RSS.
POSIX only (SIGKILL, non-UTF-8 names, FIFOs).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import tifffile


def _tiff(arr, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def make_folder(root: Path, n: int, seed: int) -> dict:
    """``n`` files: valid particles (a third) and hostile ones of many kinds, in random order."""
    from emclassify import synth

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    particles = [it.image for it in synth.iter_particles("lamellarity", max(1, n // 3), seed=seed)]
    valid = [_tiff(p) for p in particles]
    kinds = {}

    def put(name: bytes, data: bytes, kind: str):
        with open(os.path.join(os.fsencode(root), name), "wb") as fh:
            fh.write(data)
        kinds[kind] = kinds.get(kind, 0) + 1

    bomb = zlib.compress(b"\0" * (64 * 2**20), 9)
    for i in range(n):
        base = valid[i % len(valid)]
        r = rng.integers(0, 14)
        name = f"f{i:05d}".encode()
        if r < 5:
            put(name + b".tif", base, "valid TIFF")
        elif r == 5:
            put(name + b"\xff\xfe.tif", base, "valid TIFF, non-UTF-8 name")
        elif r == 6:
            data = bytearray(base)
            for _ in range(rng.integers(1, 20)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
            put(name + b".tif", bytes(data), "TIFF with random bytes changed")
        elif r == 7:
            put(name + b".tif", base[: rng.integers(0, len(base))], "truncated TIFF")
        elif r == 8:
            put(name + b".jpg", b"\xff\xd8\xff" + rng.bytes(int(rng.integers(0, 4000))), "garbage JPEG")
        elif r == 9:
            put(name + b".png", rng.bytes(int(rng.integers(0, 4000))), "random bytes named .png")
        elif r == 10:
            put(name + b".tif", _tiff(np.zeros((1, int(rng.integers(1, 600))), np.uint8)), "1-px-high image")
        elif r == 11:
            data = bytearray(_tiff(np.zeros((64, 64), np.uint8), compression="zlib"))
            with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
                off, cnt = tif.pages[0].tags[273], tif.pages[0].tags[279]
            import struct

            fmt = {3: "<H", 4: "<I"}
            struct.pack_into(fmt[int(off.dtype)], data, off.valueoffset, len(data))
            struct.pack_into(fmt[int(cnt.dtype)], data, cnt.valueoffset, len(bomb))
            put(name + b".tif", bytes(data) + bomb, "deflate bomb (64 MB per strip)")
        elif r == 12:
            put(name + b".tif", _tiff(np.zeros((3, 40, 40), np.uint8)), "multi-page TIFF")
        else:
            put(name + b".bmp", b"", "empty file")
    os.symlink(root / "nowhere.tif", root / "dangling.tif")
    os.symlink(root, root / "loop")
    (root / "folder.tif").mkdir()
    os.mkfifo(root / "pipe.tif")
    kinds["broken link, link loop, folder named .tif, FIFO"] = 4
    return kinds


def rows(path: Path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--model")
    ap.add_argument("--work")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="emclassify-sweep-"))
    folder = work / "hostile"
    kinds = make_folder(folder, args.files, args.seed)
    base = [sys.executable, "-m", "emclassify", "batch", str(folder), "--batch-size", "16", "-q"]
    if args.model:
        base += ["--model", args.model]
    tracebacks = 0
    t0 = time.perf_counter()
    ref = subprocess.run(base + ["--out", str(work / "ref.csv")], capture_output=True, text=True)
    tracebacks += "Traceback" in ref.stderr
    ref_seconds = time.perf_counter() - t0
    out = work / "killed.csv"
    rng = np.random.default_rng(args.seed + 1)
    kills = 0
    for _ in range(args.kills):
        proc = subprocess.Popen(base + ["--out", str(out), "--resume"], stderr=subprocess.PIPE, text=True)
        time.sleep(float(rng.uniform(0.5, max(1.0, ref_seconds))))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        tracebacks += "Traceback" in (err or "")
    final = subprocess.run(base + ["--out", str(out), "--resume"], capture_output=True, text=True)
    tracebacks += "Traceback" in final.stderr
    got, want = rows(out), rows(work / "ref.csv")
    status = {}
    for r in want:
        status[r["status"]] = status.get(r["status"], 0) + 1
    summary = json.loads((work / "ref.summary.json").read_text())
    report = {
        "files_by_kind": kinds,
        "rows_by_status": status,
        "unreadable_entries": summary["files"]["unreadable_entries"],
        "reference_exit_code": ref.returncode,
        "reference_seconds": round(ref_seconds, 1),
        "sigkills": kills,
        "resumed_equals_uninterrupted": got == want,
        "every_file_once": len({r["path"] for r in got}) == len(got) == len(want),
        "tracebacks": tracebacks,
        "sweep_peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["resumed_equals_uninterrupted"] and not tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
