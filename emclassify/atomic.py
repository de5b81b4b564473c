"""Atomic file output: write to a temporary file beside the target, then rename.

A reader (or a crash) never sees a half-written CSV, JSON or model file: the
target either keeps its old content or has the complete new one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success rename it onto ``target``.

    durable: fsync before the rename (records); derived files written by the thousand (particle
    crops) skip it: the rename alone still means no reader sees half a file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: reading it means setting it for a moment, and a file another thread created
# in that moment (a GUI job beside an export) would get no mask at all.
_UMASK = _read_umask()


def write_text_atomic(target, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
    return Path(target)


def write_bytes_atomic(target, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_path` for ``durable``)."""
    with atomic_path(target, durable) as tmp:
        tmp.write_bytes(data)
    return Path(target)
