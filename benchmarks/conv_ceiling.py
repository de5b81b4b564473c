"""How far the training step's convolutions are from this CPU's bf16 peak (BENCHMARKS.md "The ceiling").

    python benchmarks/conv_ceiling.py [--steps 20] [--dataset ../shared/data/nanoshapes] [--json out.json]

Three measurements, one run:
1. **The CPU's bf16 peak.** A small C program (compiled here with ``cc``; AVX512_BF16 only) runs
   independent ``vdpbf16ps`` instructions (16 lanes x 2 products, 64 FLOP each) on every core at
   once, and the same for float32 512-bit FMAs. This is the most any bf16 kernel can reach.
2. **Each convolution of the default network** (``lipnet-fcn`` at 48 px, batch 64, channels-last,
   bf16: what a training step runs) timed alone in each direction (forward, backward to the input,
   backward to the weights), as GFLOP/s and as a share of the peak.
3. **A training step in the profiler** (bf16 autocast, the native training ops, AdamW's fused kernel,
   the augmentation: what :func:`emclassify.training.fit` runs per batch): how much of it the
   convolutions take, and what the step would take if every convolution ran at the peak and
   everything else stayed. That bounds what faster convolution kernels could give.
4. With ``--dataset``: one fit of the default network (``lipnet-fcn+features``, 48 px, bf16, 4 epochs,
   the harness's split of ``train_throughput.py``), its epochs split into training steps, batch-norm
   recalibration, validation and augmentation, so the step bound becomes a bound on images/s per
   epoch (the issue's measure): the steps' share of an epoch is what faster convolutions can shorten.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from emclassify.bench import machine_description
from emclassify.models import create_model, forward
from emclassify.training.augment import augment

PEAK_SOURCE = r"""
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(void) {
  const long n = 100000000;
  __m512 acc[24];
  for (int i = 0; i < 24; i++) acc[i] = _mm512_setzero_ps();
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  double t = now();
  for (long i = 0; i < n; i++) {
#pragma GCC unroll 24
    for (int j = 0; j < 24; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, a);
    __asm__ volatile("" : "+v"(a));
  }
  double bf16 = n * 24.0 * 64 / (now() - t) / 1e9;
  __m512 x = _mm512_set1_ps(1e-9f), y = _mm512_set1_ps(1.f);
  t = now();
  for (long i = 0; i < n; i++) {
#pragma GCC unroll 24
    for (int j = 0; j < 24; j++) acc[j] = _mm512_fmadd_ps(x, y, acc[j]);
    __asm__ volatile("" : "+v"(x));
  }
  double f32 = n * 24.0 * 32 / (now() - t) / 1e9;
  float s = 0;
  for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(acc[i]);
  printf("%f %f %d\n", bf16, f32, s > 0);
  return 0;
}
"""


def cpu_peak(threads: int, repeats: int = 3):
    """(bf16, float32) GFLOP/s of all ``threads`` cores together, the best of ``repeats`` runs (the
    VM's clock varies), or None where it cannot be measured."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or "avx512_bf16" not in Path("/proc/cpuinfo").read_text():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "peak.c", Path(tmp) / "peak"
        src.write_text(PEAK_SOURCE)
        subprocess.run([cc, "-O2", "-mavx512f", "-mavx512bf16", str(src), "-o", str(exe)], check=True)
        best = (0.0, 0.0)
        for _ in range(repeats):
            procs = [subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True) for _ in range(threads)]
            outs = [p.communicate()[0].split() for p in procs]
            run = sum(float(o[0]) for o in outs), sum(float(o[1]) for o in outs)
            best = max(best[0], run[0]), max(best[1], run[1])
    return best


def _timed(fn, blocks: int = 5, repeats: int = 5) -> float:
    """Seconds per call: the fastest of ``blocks`` blocks' means (the VM's speed dips for seconds at a time)."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t) / repeats)
    return best


def conv_layers(model):
    """(c_in, c_out, side) of each 3x3 'same' conv of a LipNet at its input size, in order."""
    out, side = [], model.input_size
    for stage in model.trunk:
        for block in stage.blocks:
            out.append((block.conv.in_channels, block.conv.out_channels, side, block.padding))
            side = side - 2 * (1 - block.padding)
        if isinstance(stage.pool, torch.nn.MaxPool2d):
            side //= 2
    return out


def isolated(layers, batch: int):
    """GFLOP/s of each conv alone, per direction, bf16 channels-last."""
    rows = []
    cl = torch.channels_last
    for ci, co, s, pad in layers:
        x = torch.randn(batch, ci, s, s).bfloat16().contiguous(memory_format=cl)
        w = torch.randn(co, ci, 3, 3).bfloat16().contiguous(memory_format=cl)
        so = s - 2 * (1 - pad)
        gy = torch.randn(batch, co, so, so).bfloat16().contiguous(memory_format=cl)
        flops = 2 * batch * so * so * ci * co * 9
        args = (gy, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1)
        row = {"c_in": ci, "c_out": co, "side": s, "gflop": flops / 1e9}
        for name, fn in (("forward", lambda: torch.conv2d(x, w, padding=pad)),
                         ("backward_input", lambda: torch.ops.aten.convolution_backward(*args, [True, False, False])),
                         ("backward_weight", lambda: torch.ops.aten.convolution_backward(*args, [False, True, False]))):
            # the network's input needs no gradient: training never runs the first layer's backward_input
            row[name + "_gflops"] = None if name == "backward_input" and not rows else flops / _timed(fn) / 1e9
        rows.append(row)
    return rows


def step_profile(steps: int, batch: int = 64, size: int = 48):
    """The training step of :func:`emclassify.training.fit` (bf16 autocast) in the profiler."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = create_model("lipnet-fcn", 3, size).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    images = torch.randn(16 * batch, 1, size, size)
    labels = torch.randint(0, 3, (16 * batch,))
    gen = torch.Generator().manual_seed(0)

    def step(i):
        sl = slice((i % 16) * batch, (i % 16 + 1) * batch)
        xb = augment(images[sl], gen).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = forward(model, xb, None)
        loss = F.cross_entropy(logits.float(), labels[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):
        step(i)
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    step_s = (time.perf_counter() - t) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i)
    events = {e.key: e.self_cpu_time_total / 1e6 / steps for e in prof.key_averages()}
    conv_fwd = events.get("aten::mkldnn_convolution", 0.0)
    conv_bwd = events.get("aten::convolution_backward", 0.0)
    layers = conv_layers(model)
    flops_fwd = sum(2 * batch * s * s * ci * co * 9 for ci, co, s, _ in layers)
    # the first layer's input needs no gradient: no backward to the input there
    flops_bwd = 2 * flops_fwd - 2 * batch * layers[0][2] ** 2 * layers[0][0] * layers[0][1] * 9
    profiled = sum(events.values())
    return model, layers, {"step_s": step_s, "profiled_step_s": profiled, "conv_forward_s": conv_fwd,
                           "conv_backward_s": conv_bwd, "conv_gflop": (flops_fwd + flops_bwd) / 1e9}


def epoch_split(dataset: str, epochs: int = 4):
    """Seconds per epoch of one fit, and of its recalibration, validation and augmentation."""
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import prepare

    from emclassify.training import TrainConfig, fit

    fit_module = importlib.import_module("emclassify.training.fit")
    parts = {"recalibration": 0.0, "validation": 0.0, "augmentation": 0.0}

    def timed(name, fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[name] += time.perf_counter() - t
        return run

    originals = {n: getattr(fit_module, n) for n in ("recalibrate_batchnorm", "predict_logits", "augment")}
    for name, attr in (("recalibration", "recalibrate_batchnorm"), ("validation", "predict_logits"),
                       ("augmentation", "augment")):
        setattr(fit_module, attr, timed(name, originals[attr]))
    try:
        ds, train_set, val_set = prepare(dataset, 48)
        cfg = TrainConfig(arch="lipnet-fcn+features", epochs=epochs, patience=epochs + 1, precision="bfloat16")
        res = fit(train_set, val_set, len(ds.classes), cfg)
    finally:
        for attr, fn in originals.items():
            setattr(fit_module, attr, fn)
    later = res.history[1:]  # without the first epoch's one-off costs
    epoch_s = sum(h.seconds for h in later) / len(later)
    out = {k: v / epochs for k, v in parts.items()}
    out.update(epoch_s=epoch_s, n_train=len(train_set), images_per_s_per_epoch=len(train_set) / epoch_s)
    out["steps_s"] = epoch_s - out["recalibration"] - out["validation"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dataset", help="also split a fit's epochs on this data set (e.g. ../shared/data/nanoshapes)")
    ap.add_argument("--json")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    peak = cpu_peak(threads)
    model, layers, step = step_profile(args.steps)
    rows = isolated(layers, 64)
    report = {"date": date.today().isoformat(), "machine": machine_description(), "threads": threads,
              "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "peak_bf16_gflops": peak and peak[0], "peak_float32_gflops": peak and peak[1],
              "step": step, "convs_isolated": rows}
    conv_s = step["conv_forward_s"] + step["conv_backward_s"]
    print(f"machine: {report['machine']}, {threads} threads")
    if peak:
        print(f"peak: bf16 {peak[0]:.0f} GFLOP/s, float32 {peak[1]:.0f} GFLOP/s ({threads} cores at once)")
    print(f"training step: {step['step_s'] * 1e3:.1f} ms; convolutions {conv_s * 1e3:.1f} ms "
          f"({step['conv_gflop']:.1f} GFLOP, {step['conv_gflop'] / conv_s:.0f} GFLOP/s)")
    print("conv (in -> out @ side): forward / backward to input / backward to weights, GFLOP/s"
          + (" (% of the bf16 peak)" if peak else ""))
    for r in rows:
        cells = []
        for k in ("forward", "backward_input", "backward_weight"):
            g = r[k + "_gflops"]
            cells.append("    -" if g is None else f"{g:5.0f}" + (f" ({100 * g / peak[0]:3.0f} %)" if peak else ""))
        print(f"  {r['c_in']:3d} -> {r['c_out']:3d} @ {r['side']:2d}: " + " / ".join(cells))
    if peak:
        at_peak = step["conv_gflop"] / peak[0]
        ceiling = step["step_s"] - conv_s + at_peak
        report["step_at_peak_s"] = ceiling
        report["step_speedup_bound"] = step["step_s"] / ceiling
        print(f"every convolution at the peak: {at_peak * 1e3:.1f} ms of convolutions, a step of "
              f"{ceiling * 1e3:.1f} ms: at most {step['step_s'] / ceiling:.2f}x faster steps")
    if args.dataset:
        split = epoch_split(args.dataset)
        report["epoch"] = split
        print(f"an epoch (after the first): {split['epoch_s']:.2f} s, {split['images_per_s_per_epoch']:.0f} images/s; "
              f"steps {split['steps_s']:.2f} s (augmentation {split['augmentation']:.2f} s of it), "
              f"recalibration {split['recalibration']:.2f} s, validation {split['validation']:.2f} s")
        if peak:
            steps_at_peak = split["steps_s"] / report["step_speedup_bound"]
            bound = split["epoch_s"] / (split["epoch_s"] - split["steps_s"] + steps_at_peak)
            report["epoch_speedup_bound"] = bound
            print(f"with every step's convolutions at the peak: at most {bound:.2f}x the images/s per epoch")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
