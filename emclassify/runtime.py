"""What every long-running call shares, below training, evaluation, inference and the GUI:
a cancel flag that crosses threads, the device choice and the CPU threads a step may use.

(They lived in :mod:`emclassify.inference`, which training, evaluation and the GUI then imported
for these alone; :mod:`emclassify.inference` still re-exports them.)
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import torch


class CancelToken:
    """Thread-safe stop flag: ``cancel()`` from any thread; the run stops after the current batch or epoch."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@contextmanager
def cpu_threads_beside(busy: int) -> Iterator[int]:
    """Within it, torch's CPU ops started from this thread use ``busy`` fewer threads (at least one)
    than before, for as long as other work keeps ``busy`` cores busy; yields the count they use.

    Why: an OpenMP team of as many threads as cores, sharing them with another busy thread, waits at
    each barrier for whichever of its threads the kernel has descheduled. On 2 cores the classifier's
    conv trunk ran 3x slower beside one busy Python thread (the micrograph finder's), and a run of
    NanoShapes micrographs went 10-14 % faster with the classifier on one thread beside the finder
    (BENCHMARKS.md "Native distance transforms, and the search ahead of classification"). The
    OpenMP thread count is per calling thread, so work already running in other threads keeps its
    own; a thread starting torch's CPU work for the first time meanwhile takes the lowered count.
    """
    before = torch.get_num_threads()
    wanted = max(1, before - max(0, int(busy)))
    if wanted == before:
        yield before
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda was requested but no CUDA GPU is usable by this torch "
            f"({torch.__version__}); use --device cpu or auto"
        )
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 products in hardware (AVX512_BF16 or AMX), where oneDNN's
    bf16 convolutions are fast; without them bf16 is emulated and slower than float32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: read the flags the kernel reports
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line for line in f if line.startswith("flags")), "").split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def check_precision(precision: str) -> str:
    """``precision`` if it names a training precision (``PRECISIONS``), else a ValueError naming them."""
    from .defaults import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def training_autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of training steps for ``precision`` (``auto``, ``float32``, ``bfloat16``) on
    ``device``, or None for plain float32. ``auto``: bfloat16 on a CPU with native bf16 (weights,
    optimiser and batch-norm statistics stay float32), float32 elsewhere (on CUDA: not yet measured)."""
    if check_precision(precision) == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None  # auto


def autocast_steps(device: torch.device, dtype: Optional[torch.dtype]):
    """The context a training step's forward pass runs in: autocast to ``dtype`` (from
    :func:`training_autocast_dtype`), or nothing when it is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def fused_optimizer_supported(device: torch.device) -> bool:
    """Whether AdamW's fused kernel (one pass over all parameters per step) runs on ``device``: CPU and
    CUDA. Against the default per-tensor loop it saves ~0.8 ms of a ~95 ms step (BENCHMARKS.md
    "Seventh round"); the update is the same formula."""
    return device.type in ("cpu", "cuda")


# glibc's mallopt parameters (malloc.h) and the values training sets (see reuse_freed_memory)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_MMAP_THRESHOLD_BYTES = 1 << 30
_TRIM_THRESHOLD_BYTES = 1 << 30
_allocator_tuned: Optional[bool] = None


def reuse_freed_memory() -> bool:
    """Let glibc's allocator keep freed blocks of up to 1 GiB for reuse instead of handing them back
    to the kernel; process-wide, set once (later calls return the first answer). Returns whether it
    is in effect.

    Why: glibc serves blocks above its mmap threshold (at most 32 MiB, however it adapts) with a
    fresh ``mmap`` and unmaps them when freed, so every such tensor of every step -- a float32 batch
    of 128 recalibration images at 48 px holds 38 MB per layer -- pays page faults on first touch.
    Training epochs were 6-11 % faster with the blocks kept (BENCHMARKS.md "Sixth round"). The
    cost: up to 1 GiB of freed memory may stay with the process (the 14,000-particle CV's peak
    did not grow). Every thread allocates from the one main arena: a worker thread's arena grows
    in heaps of at most 64 MiB, so its larger blocks (a finder tile's activations, ~100 MB) were
    mapped and unmapped each time whatever the thresholds -- the learned finder on an 8k
    micrograph in a thread took 66 s with 10 M page faults, 51 s with one arena (BENCHMARKS.md);
    this program's threads allocate seldom, so they do not contend for it. What PyTorch's CPU
    tuning guides do with jemalloc or tcmalloc, here without a preloaded library. Other C libraries (Windows, macOS, musl) are left as they are, and
    ``EMCLASSIFY_MALLOC_TUNING=0`` leaves glibc as it is too.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if sys.platform.startswith("linux") and os.environ.get("EMCLASSIFY_MALLOC_TUNING", "1") != "0":
            try:
                mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
            except (OSError, AttributeError):  # not glibc
                mallopt = None
            if mallopt is not None:
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                                        and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
                                        and mallopt(_M_ARENA_MAX, 1))
    return _allocator_tuned


__all__ = ["CancelToken", "autocast_steps", "check_precision", "cpu_has_native_bf16", "resolve_device", "reuse_freed_memory",
           "training_autocast_dtype"]
