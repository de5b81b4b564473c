"""Two `emclassify batch` CSVs of the same folder, compared row by row (e.g. --device cuda vs cpu).

    python benchmarks/compare_csv.py A.csv B.csv

Prints the number of rows, of differing predicted classes and the largest probability difference.
Exit status 1 when a predicted class differs on a row whose top two probabilities are more than
1e-4 apart in both files (a near-tie may flip with float32 summation order; a clear call may not).
"""
from __future__ import annotations

import csv
import sys


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def _probs(row, columns):
    return [float(row[c]) for c in columns] if row["status"] == "ok" else []


def main(a_path: str, b_path: str) -> int:
    a, b = _rows(a_path), _rows(b_path)
    columns = [c for c in next(iter(a.values())) if c.startswith("prob_")] if a else []
    common = sorted(set(a) & set(b))
    differ, clear_differ, max_diff = 0, 0, 0.0
    for path in common:
        pa, pb = _probs(a[path], columns), _probs(b[path], columns)
        if a[path]["status"] != b[path]["status"]:
            clear_differ += 1
            continue
        if not pa:
            continue
        max_diff = max(max_diff, max(abs(x - y) for x, y in zip(pa, pb)))
        if a[path]["predicted_class"] != b[path]["predicted_class"]:
            differ += 1
            margins = [sorted(p)[-1] - sorted(p)[-2] for p in (pa, pb)]
            clear_differ += min(margins) > 1e-4
    only = len(set(a) ^ set(b))
    print(f"rows: {len(a)} vs {len(b)} ({only} in one file only); predicted class differs on {differ} "
          f"({clear_differ} not near-ties); largest probability difference {max_diff:.2e}")
    return 1 if clear_differ or only else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
