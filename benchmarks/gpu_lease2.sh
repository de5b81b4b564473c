#!/usr/bin/env bash
# For a second GPU lease, in one call (prepared on 2026-11-28; that session's lease was refused: "no new
# device machine is lent at present", so it has not run yet). Side by side on one GPU machine:
#   A. `emclassify cv` of the 14,000-particle synthetic lamellarity set with defaults (the speed
#      issue's benchmark, "the same benchmark runs there too"), timed;
#   B. the NanoShapes finder cross-validation (benchmarks/finder_cv.py, no curated-crop classifier)
#      at 1,600 training steps (the default) and at 3,200: does training longer lift the end-to-end
#      figure? (On 2 CPU cores 1,600 steps already take ~14 min per fold.)
#   C. benchmarks/finder_classifier_mix.py on all 5 folds, one after the other: the classifier of
#      found particles trained on found + curated crops vs found only (on the CPU only folds 3-4
#      were measured, BENCHMARKS.md "Which classifier for found particles"). Needs CROPS (NanoShapes).
# The four jobs share the machine's cores (A 6 threads, the others 3): wall times are for that sharing.
# The finder runs stop after BUDGET seconds (default 450), keeping the folds they finished (each
# run's .partial.json); the synthesis and the CV after BUDGET + 90. Everything lands in
# $OUT/results.tgz plus $OUT/summary.txt.
#
#   OUT=/some/folder MICROGRAPHS=path/to/nanoshapes-micrographs CROPS=path/to/nanoshapes \
#       benchmarks/gpu_lease2.sh [BUDGET]
# With the device tool: copy both NanoShapes folders into an ignored folder of the checkout (e.g.
# .devdata/, listed in .git/info/exclude; ../shared does not travel), name it in `carry`, and run
# with a timeout_s of BUDGET + 120.
set -u
BUDGET=${1:-450}
OUT=${OUT:?set OUT to a folder for the results}
MICRO=${MICROGRAPHS:-../shared/data/nanoshapes-micrographs}
CROPS=${CROPS:-../shared/data/nanoshapes}
PY=${PYTHON:-python3}
RES=/tmp/lease2
export PYTHONUNBUFFERED=1 EMCLASSIFY_CACHE=/tmp/emclassify-cache PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
rm -rf "$RES" && mkdir -p "$RES" "$OUT"
START=$(date +%s)
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv; nproc
  $PY -c 'import torch,sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'
  $PY -c 'import emclassify._native as n; print(n.backend_description())'; } >"$RES/env.txt" 2>&1

for steps in 1600 3200; do
    OMP_NUM_THREADS=3 timeout "$BUDGET" $PY benchmarks/finder_cv.py "$MICRO" --folds 5 --steps $steps --views 1 \
        --out "$RES/finder-$steps.json" >"$RES/finder-$steps.log" 2>&1 &
done
(
    export OMP_NUM_THREADS=3
    for k in 0 1 2 3 4; do
        left=$((BUDGET - $(date +%s) + START))
        [ "$left" -gt 30 ] || break
        timeout "$left" $PY benchmarks/finder_classifier_mix.py "$MICRO" "$CROPS" $k \
            "$RES/mix-fold$((k + 1)).json" "/tmp/mix-finder-$k.safetensors" || break
    done
) >"$RES/mix.log" 2>&1 &
(
    export OMP_NUM_THREADS=6
    t0=$(date +%s)
    timeout "$BUDGET" $PY -m emclassify synth /tmp/lam14k --problem lamellarity --n 14000 --seed 14 >/dev/null || exit 1
    t1=$(date +%s)
    echo "synth: $((t1 - t0)) s"
    left=$((BUDGET + 90 - (t1 - t0)))
    [ "$left" -gt 30 ] || { echo "cv: no time left after the synthesis"; exit 1; }
    timeout "$left" $PY -m emclassify cv /tmp/lam14k --out "$RES/cv14k"
    echo "cv rc=$? wall $(( $(date +%s) - t1 )) s"
) >"$RES/cv14k.log" 2>&1 &
wait
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >>"$RES/env.txt" 2>&1

{
    cat "$RES/env.txt"
    echo "== cv14k"; tail -n 25 "$RES/cv14k.log"
    echo "== classifier of found particles, per fold"; grep -E "end to end|Error|Traceback" "$RES/mix.log"
    for steps in 1600 3200; do
        echo "== finder $steps steps"; grep -E "^fold [0-9]/[0-9] (learned|classical):|^learned|^classical|^  classifier|^wall|Error|Traceback" \
            "$RES/finder-$steps.log" | tail -n 30
    done
} >"$OUT/summary.txt"
tar -C /tmp -czf "$OUT/results.tgz" lease2
cat "$OUT/summary.txt"
