"""What every long-running call shares, below training, evaluation, inference and the GUI:
a cancel flag that crosses threads and the device choice.

(They lived in :mod:`emclassify.inference`, which training, evaluation and the GUI then imported
for these alone; :mod:`emclassify.inference` still re-exports them.)
"""
from __future__ import annotations

import threading

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


__all__ = ["CancelToken", "resolve_device"]
