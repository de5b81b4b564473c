#!/usr/bin/env bash
# Smoke-test a built bundle from outside the source tree, as a user would run it.
#   packaging/smoke-test.sh [dist/emclassify]
set -euo pipefail
bundle="$(cd "${1:-$(dirname "$0")/../dist/emclassify}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"   # nothing from the source tree is importable from here
env -u PYTHONPATH "$bundle/emclassify" --version | tee version.txt
grep -q "ops backend: native" version.txt || { echo "smoke test: the native backend is not active in the bundle" >&2; exit 1; }
env -u PYTHONPATH "$bundle/emclassify" batch "$bundle/samples" --out "$work/samples.csv"
n=$(($(wc -l < "$work/samples.csv") - 1))
[ "$n" -eq 40 ] || { echo "smoke test: expected 40 rows in the CSV, got $n" >&2; exit 1; }
# whole micrographs: a synthetic one (particles found, cut out, measured, classified)
env -u PYTHONPATH "$bundle/emclassify" synth "$work/fields" --micrographs 1 --side 512 --n 8
env -u PYTHONPATH "$bundle/emclassify" batch "$work/fields/images" --micrographs --pixel-size 0.5nm --out "$work/fields.csv"
n=$(($(wc -l < "$work/fields.csv") - 1))
[ "$n" -ge 1 ] || { echo "smoke test: no particle rows from the synthetic micrograph" >&2; exit 1; }
env -u PYTHONPATH QT_QPA_PLATFORM=offscreen "$bundle/emclassify-gui" --selftest --screenshot "$work/selftest.png"
echo "smoke test: OK ($bundle)"
