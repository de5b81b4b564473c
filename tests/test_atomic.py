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
