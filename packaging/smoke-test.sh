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
# whole micrographs: synthetic ones (particles found, cut out, measured, classified)
env -u PYTHONPATH "$bundle/emclassify" synth "$work/fields" --micrographs 2 --side 512 --n 8
env -u PYTHONPATH "$bundle/emclassify" batch "$work/fields/images" --micrographs --pixel-size 0.5nm --out "$work/fields.csv"
n=$(($(wc -l < "$work/fields.csv") - 1))
[ "$n" -ge 1 ] || { echo "smoke test: no particle rows from the synthetic micrographs" >&2; exit 1; }
# the learned finder: a few training steps, then a run with it (the bundle trains, saves and loads it)
env -u PYTHONPATH "$bundle/emclassify" train-finder "$work/fields" --out "$work/finder.safetensors" --steps 5 \
    --batch 2 --crop 96
rc=0
env -u PYTHONPATH "$bundle/emclassify" batch "$work/fields/images" --micrographs --finder learned \
    --finder-model "$work/finder.safetensors" --out "$work/learned.csv" || rc=$?
# 3 = some rows are errors (an untrained finder may find specks); anything else is a failure
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { echo "smoke test: learned-finder batch exited $rc" >&2; exit 1; }
[ -s "$work/learned.csv" ] || { echo "smoke test: no CSV from the learned finder" >&2; exit 1; }
env -u PYTHONPATH QT_QPA_PLATFORM=offscreen "$bundle/emclassify-gui" --selftest --screenshot "$work/selftest.png"
echo "smoke test: OK ($bundle)"
