#!/usr/bin/env bash
# The GPU half, run for real, in one call on a machine with an NVIDIA GPU (BENCHMARKS.md "GPU").
#
#   OUT=/some/folder DATA=path/to/nanoshapes benchmarks/gpu_check.sh [SECONDS]
#
# Stages, each under its own time limit and all inside SECONDS (default 540) so that a slow stage
# costs the later ones, never the whole run; each writes its log/JSON under $OUT:
#   1. build emclassify._C with its CUDA kernels against the machine's CUDA torch (TORCH_CUDA_ARCH_LIST
#      defaults to the GPU's own architecture) and check that the CUDA ops are there;
#   2. the CUDA tests (parity with the CPU references on random and odd shapes, opcheck, the model's
#      GPU path, the one-time self-check) and the CPU native tests against this torch;
#   3. `emclassify batch` of a generated folder with --device cuda and --device cpu: same classes;
#   4. `emclassify bench` with its GPU table (cuDNN eager vs fused preprocessing + trunk, batch 512);
#   5. training throughput on the GPU (benchmarks/train_throughput.py, NanoShapes);
#   6. `emclassify cv` of NanoShapes with defaults on the GPU, wall time and accuracy.
# DATA (NanoShapes) is needed by stages 5-6 only; they are skipped when it is absent.
set -u
BUDGET=${1:-540}
START=$(date +%s)
OUT=${OUT:?set OUT to a folder for logs}
DATA=${DATA:-../shared/data/nanoshapes}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 EMCLASSIFY_CACHE=/tmp/emclassify-cache PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# The system compiler, not the one Python was built with (setuptools' default): on the lent H200 (2026-11-28) /opt/gcc/bin/g++
# linked a private libstdc++ into _C.so, and formatting a TORCH_CHECK message then crashed (SIGSEGV in
# std::ostream inside _C.so); /usr/bin/g++ (the same GCC 13) built a library that raised cleanly.
[ -x /usr/bin/g++ ] && export CC=/usr/bin/gcc CXX=/usr/bin/g++
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

left() { echo $((BUDGET - ($(date +%s) - START))); }
# stage NAME LIMIT COMMAND...: run under min(LIMIT, time left), log to $OUT/NAME.log, note the outcome.
stage() {
    local name=$1 limit=$2; shift 2
    local remaining; remaining=$(left)
    if [ "$remaining" -lt 20 ]; then echo "$name: skipped (no time left)" | tee -a "$SUMMARY"; return 1; fi
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    local t0; t0=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout "$limit" bash -c "$*" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$SUMMARY"
    tail -n 15 "$OUT/$name.log"
    return $rc
}

stage env 30 "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv; \
    $PY -c 'import torch,sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))'; nproc"

ARCH=$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))' 2>/dev/null || echo 9.0)
stage build 240 "rm -rf build emclassify/_C*.so; TORCH_CUDA_ARCH_LIST=\${TORCH_CUDA_ARCH_LIST:-$ARCH} MAX_JOBS=\$(nproc) \
    $PY setup.py build_ext --inplace && $PY -c 'from emclassify._native import native_cuda_built, backend_description as d; \
    assert native_cuda_built(), d(); print(d())'" || { echo "build failed: see $OUT/build.log"; exit 1; }

stage tests 150 "$PY -m pytest -q -p no:cacheprovider tests/test_native_cuda.py tests/test_native_ops.py \
    tests/test_native_conv.py tests/test_models.py"

stage batch 90 "set -eo pipefail; $PY -m emclassify synth /tmp/particles --n 3000 --seed 4 >/dev/null; \
    for d in cuda cpu; do TIMEFORMAT=\"\$d: %R s\"; time $PY -m emclassify batch /tmp/particles --device \$d \
        --out /tmp/batch-\$d.csv -q; done; \
    $PY benchmarks/compare_csv.py /tmp/batch-cuda.csv /tmp/batch-cpu.csv | tee $OUT/batch_compare.txt"

stage bench 150 "$PY -m emclassify bench --images 1000 --no-compile --repeats 3 --json $OUT/bench.json --markdown $OUT/bench.md"

if [ -f "$DATA/manifest.csv" ]; then
    stage train_throughput 90 "$PY benchmarks/train_throughput.py $DATA --epochs 3 --rounds 2 \
        --recipes nchw-bn1024,channels-last-bn512 --json $OUT/train_throughput.json"
    stage cv 240 "TIMEFORMAT='cv wall %R s'; time $PY -m emclassify cv $DATA --folds 5 --out /tmp/cv-gpu && \
        cp /tmp/cv-gpu/metrics.json $OUT/cv_metrics.json && cp /tmp/cv-gpu/report.md $OUT/cv_report.md"
else
    echo "train_throughput, cv: skipped (no NanoShapes at $DATA)" | tee -a "$SUMMARY"
fi
echo "== summary"; cat "$SUMMARY"
