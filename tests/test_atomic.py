"""Atomic output: a failed write leaves the previous file intact and no temporary files behind."""
from __future__ import annotations

import pytest

from emclassify.atomic import atomic_path, write_text_atomic


def test_failed_write_keeps_old_content(tmp_path):
    target = write_text_atomic(tmp_path / "r.csv", "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a new fi")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_successful_write_replaces(tmp_path):
    target = write_text_atomic(tmp_path / "sub" / "r.json", "{}\n")
    write_text_atomic(target, '{"a": 1}\n')
    assert target.read_text() == '{"a": 1}\n'
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_writing_never_touches_the_process_umask(tmp_path, monkeypatch):
    """Reading the umask means setting it for a moment; a file another thread created then would have
    no mask. Outputs get the usual permissions from the umask read at import instead."""
    import os
    import stat

    calls = []
    real = os.umask
    monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real(m))
    target = write_text_atomic(tmp_path / "r.csv", "x\n")
    assert calls == []
    mask = real(0)
    real(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
