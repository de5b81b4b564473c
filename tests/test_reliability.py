"""Hostile input to `emclassify batch`, resume and model files: one test per case of the reliability table
(docs/RELIABILITY.md). Every case must end in an error row, a refusal with one clear line, or a documented
behaviour: never a traceback, a mixed record or unbounded memory."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile

from emclassify import synth
from emclassify.batch import (EXIT_NOTHING_RAN, EXIT_OK, EXIT_SOME_ERRORS, BatchError, lock_path_for,
                              partial_path_for, run_batch, run_record_path_for)
from emclassify.cli import main
from emclassify.events import BatchClassified
from emclassify.inference import Classifier, load_for_model
from emclassify.io import DatasetError, ImageReadError, decode_image, load_dataset
from emclassify.modelfile import CARD_KEY, ModelFileError, load_model
from emclassify.preprocess import MIN_REGION_SIDE, PreprocessConfig

from conftest import make_model_file, write_tiff


class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing after the raise runs, the partial file stays."""


def _folder(root, n=6, seed=5):
    for i, it in enumerate(synth.iter_particles("lamellarity", n, seed=seed)):
        write_tiff(root / f"p{i}.tif", it.image)
    return root


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _killed_run(folder, model, out):
    """A run that dies after its first batch: .partial and its run record are left behind."""
    def die(event):
        if isinstance(event, BatchClassified):
            raise Killed

    with pytest.raises(Killed):
        run_batch(folder, model=model, out=out, batch_size=2, progress=die)
    assert partial_path_for(out).is_file() and run_record_path_for(out).is_file()


@pytest.fixture
def folder(tmp_path):
    return _folder(tmp_path / "particles")


# --------------------------------------------------------------------------- file names and records


def test_non_utf8_file_name_is_classified_and_written_escaped(tmp_path, folder, model_file):
    if sys.platform == "win32" or sys.platform == "darwin":
        pytest.skip("only POSIX file systems other than macOS allow names that are not valid UTF-8")
    raw = os.path.join(os.fsencode(folder), b"bad\xffname.tif")
    with open(raw, "wb") as fh:
        fh.write((folder / "p0.tif").read_bytes())
    out = tmp_path / "r.csv"
    assert main(["batch", str(folder), "--model", str(model_file), "--out", str(out), "-q"]) == EXIT_OK
    row = next(r for r in _rows(out) if "name" in r["path"])
    assert row["path"] == "bad\\xffname.tif" and row["status"] == "ok"
    assert "not valid UTF-8" in row["warnings"]
    # and resuming that record works (the escaped path matches the file again)
    assert main(["batch", str(folder), "--model", str(model_file), "--out", str(out), "--resume", "-q"]) == EXIT_OK
    summary = json.loads(out.with_name("r.summary.json").read_text())
    assert summary["files"]["resumed"] == 7


def test_killed_run_resumed_with_another_model_is_refused(tmp_path, folder, model_file):
    out = tmp_path / "r.csv"
    _killed_run(folder, model_file, out)
    other = make_model_file(tmp_path / "other.safetensors", seed=1)   # same classes, other weights
    with pytest.raises(BatchError, match="another model"):
        run_batch(folder, model=other, out=out, resume=True)
    assert main(["batch", str(folder), "--model", str(other), "--out", str(out), "--resume", "-q"]) == EXIT_NOTHING_RAN
    # the same model resumes it
    done = run_batch(folder, model=model_file, out=out, resume=True)
    assert done.summary["files"]["resumed"] == 2 and len(_rows(out)) == 6


def test_old_summary_plus_killed_run_of_another_model_is_refused(tmp_path, folder, model_file):
    out = tmp_path / "r.csv"
    run_batch(folder, model=model_file, out=out)                      # complete run, model A
    other = make_model_file(tmp_path / "other.safetensors", seed=1)
    _killed_run(folder, other, out)                                   # model B killed on the same output
    with pytest.raises(BatchError, match="another model"):            # resuming with A must not mix in B's rows
        run_batch(folder, model=model_file, out=out, resume=True)


def test_resume_into_record_of_another_folder_is_refused(tmp_path, folder, model_file):
    out = tmp_path / "r.csv"
    run_batch(folder, model=model_file, out=out)
    second = _folder(tmp_path / "other-folder", seed=9)
    with pytest.raises(BatchError, match="written for folder"):
        run_batch(second, model=model_file, out=out, resume=True)


def test_partial_without_its_run_record_is_refused(tmp_path, folder, model_file):
    out = tmp_path / "r.csv"
    _killed_run(folder, model_file, out)
    run_record_path_for(out).unlink()
    with pytest.raises(BatchError, match="run record"):
        run_batch(folder, model=model_file, out=out, resume=True)


# --------------------------------------------------------------------------- hostile files


def _deflate_bomb(inflated: int) -> bytes:
    """A valid 64x64 deflate TIFF whose one strip inflates to ``inflated`` bytes."""
    co = zlib.compressobj(9)
    chunk = b"\0" * 2**22
    payload = b"".join(co.compress(chunk) for _ in range(inflated // len(chunk))) + co.flush()
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((64, 64), np.uint8), compression="zlib")
    data = bytearray(buf.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        page = tif.pages[0]
        off_tag, count_tag = page.tags[273], page.tags[279]
    fmt = {3: "<H", 4: "<I"}
    import struct

    struct.pack_into(fmt[int(off_tag.dtype)], data, off_tag.valueoffset, len(data))
    struct.pack_into(fmt[int(count_tag.dtype)], data, count_tag.valueoffset, len(payload))
    return bytes(data) + payload


def test_deflate_bomb_is_an_error_with_bounded_memory(tmp_path):
    bomb = _deflate_bomb(256 * 2**20)
    assert len(bomb) < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match="inflates beyond"):
            decode_image(tmp_path / "bomb.tif", bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20   # bounded by the declared 64x64 image, not the 256 MB it inflates to


def test_huge_file_and_special_files_are_error_rows(tmp_path, folder, model_file):
    huge = folder / "huge.tif"
    with open(huge, "wb") as fh:
        fh.truncate(3 * 2**30)   # sparse: 3 GB on paper, nothing on disk
    (folder / "dir.tif").mkdir()
    os.symlink(folder / "missing.tif", folder / "dangling.tif")
    os.symlink(folder, folder / "loop")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.tif")
    out = tmp_path / "r.csv"
    outcome = run_batch(folder, model=model_file, out=out)
    by = {r["path"]: r for r in _rows(out)}
    assert by["huge.tif"]["status"] == "error" and "larger than any image" in by["huge.tif"]["error"]
    reasons = dict((d["path"], d["reason"]) for d in outcome.summary["unreadable_entries"])
    assert "broken symbolic link" in reasons["dangling.tif"]
    assert "folder named like an image" in reasons["dir.tif"]
    assert "link loop" in reasons["loop"]
    if hasattr(os, "mkfifo"):
        assert "not a regular file" in reasons["pipe.tif"]
    assert outcome.summary["files"]["unreadable_entries"] == len(reasons)
    assert outcome.exit_code == EXIT_SOME_ERRORS


def test_manifest_mask_pointing_outside_or_at_a_device(tmp_path, folder, model_file):
    (folder / "manifest.csv").write_text("path,mask\np0.tif,/dev/zero\n")
    with pytest.raises(BatchError, match="line 2.*outside"):
        run_batch(folder, model=make_model_file(tmp_path / "m.safetensors", mode="crop"), out=tmp_path / "r.csv")
    outcome = run_batch(folder, model=make_model_file(tmp_path / "m.safetensors", mode="crop"),
                        out=tmp_path / "r.csv", allow_outside=True)
    row = next(r for r in outcome.results if r.path == "p0.tif")
    assert row.status == "error" and "not a regular file" in row.error


def test_manifest_paths_escaping_the_dataset_are_refused(tmp_path):
    root = tmp_path / "ds"
    write_tiff(tmp_path / "outside.tif", np.zeros((40, 40), np.uint8))
    write_tiff(root / "in.tif", np.zeros((40, 40), np.uint8))
    (root / "manifest.csv").write_text("path,label\nin.tif,a\n../outside.tif,b\n")
    with pytest.raises(DatasetError, match=r"line 3: image path '../outside.tif' points outside"):
        load_dataset(root)
    assert len(load_dataset(root, allow_outside=True)) == 2


@pytest.mark.parametrize("shape", [(1, 1), (1, 500), (500, 3)])
def test_too_small_images_are_error_rows(tmp_path, model_file, shape):
    root = tmp_path / "f"
    write_tiff(root / "tiny.tif", np.full(shape, 7, np.uint8))
    outcome = run_batch(root, model=model_file, out=tmp_path / "r.csv")
    r = outcome.results[0]
    assert r.status == "error" and "too small to classify" in r.error and f"{MIN_REGION_SIDE} px" in r.error


def test_garbage_jpeg_message_is_deterministic(tmp_path):
    data = b"\xff\xd8\xff" + bytes(range(256)) * 4
    messages = set()
    for _ in range(3):
        with pytest.raises(ImageReadError) as exc:
            decode_image(tmp_path / "x.jpg", bytes(data))
        messages.add(exc.value.reason)
    assert len(messages) == 1 and " at 0x" not in messages.pop()


def test_large_images_are_preprocessed_on_arrival(tmp_path):
    big = np.random.default_rng(0).integers(0, 255, (1500, 1500), dtype=np.uint8)
    path = write_tiff(tmp_path / "f" / "big.tif", big)
    from emclassify.io import Sample

    cfg = PreprocessConfig(mode="surround", size=32)
    item = load_for_model(Sample(path=path, relpath="big.tif"), tmp_path / "f", cfg, prepare_large=True)
    assert item.image is None and item.input is not None and tuple(item.input.shape) == (1, 32, 32)
    from emclassify import ops

    ref = ops.preprocess([big], None, cfg)[0]
    assert np.allclose(item.input.numpy(), ref.numpy(), atol=1e-5)


def test_batch_memory_is_bounded_by_bytes(tmp_path, model_file):
    small = Classifier(load_model(model_file), device="cpu")
    assert small.images_per_batch(64) == 64
    big = Classifier(load_model(make_model_file(tmp_path / "big.safetensors", size=512)), device="cpu")
    assert 1 <= big.images_per_batch(64) < 64


# --------------------------------------------------------------------------- model files


def _rewrite_card(src, dst, edit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        card = json.loads(f.metadata()[CARD_KEY])
    card = edit(card)
    save_file(tensors, str(dst), metadata={CARD_KEY: card if isinstance(card, str) else json.dumps(card)})
    return dst


CARD_EDITS = {
    "list": lambda c: [c],
    "null": lambda c: None,
    "format_version x": lambda c: {**c, "format_version": "x"},
    "deep nesting": lambda c: "[" * 100_000 + "]" * 100_000,
    "classes string": lambda c: {**c, "classes": "xyz"},
    "mean not a number": lambda c: {**c, "preprocess": {**c["preprocess"], "mean": "abc"}},
    "size 4096": lambda c: {**c, "preprocess": {**c["preprocess"], "size": 4096}},
    "more classes than the weights": lambda c: {**c, "classes": c["classes"] + ["d"]},
    "bad confusion matrix": lambda c: {**c, "metrics": {"validation": {"confusion_matrix": [[1, 2], [3]]}}},
    "validation not an object": lambda c: {**c, "metrics": {"validation": [1, 2]}},
    "negative counts": lambda c: {**c, "metrics": {"cv": {"confusion_matrix": [[-1, 0, 0]] * 3}}},
}


@pytest.mark.parametrize("case", sorted(CARD_EDITS))
def test_bad_cards_are_refused_at_load(tmp_path, folder, model_file, case, capsys):
    bad = _rewrite_card(model_file, tmp_path / "bad.safetensors", CARD_EDITS[case])
    with pytest.raises(ModelFileError):
        load_model(bad)
    out = tmp_path / "r.csv"
    assert main(["batch", str(folder), "--model", str(bad), "--out", str(out), "-q"]) == EXIT_NOTHING_RAN
    assert not out.exists() and not partial_path_for(out).exists()     # refused before any work
    # info reads the card only: a card that is wrong in itself is refused; weights it does not open
    assert main(["info", str(bad)]) == (0 if case == "more classes than the weights" else 4)
    err = capsys.readouterr().err
    assert err and all(line.startswith("emclassify ") for line in err.splitlines())   # one clear line each


def test_nan_weights_are_refused(tmp_path, model_file):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model_file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    name = next(k for k, t in tensors.items() if t.is_floating_point() and t.numel() > 1)
    tensors[name][0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        load_model(tmp_path / "nan.safetensors")


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"garbage", b"\x80\x04K.", b"PK\x03\x04rest"])
def test_info_on_any_file_exits_0_or_4(tmp_path, content, capsys):
    p = tmp_path / "m.safetensors"
    p.write_bytes(content)
    assert main(["info", str(p)]) == 4
    assert main(["info", "/dev/zero"]) == 4
    assert main(["info", str(tmp_path)]) == 4
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------- outputs and options


def test_out_that_is_a_folder_or_device_is_refused_before_the_run(tmp_path, folder, model_file):
    (tmp_path / "adir").mkdir()
    with pytest.raises(BatchError, match="is a folder"):
        run_batch(folder, model=model_file, out=tmp_path / "adir")
    with pytest.raises(BatchError, match="not a regular file"):
        run_batch(folder, model=model_file, out="/dev/null")
    # a folder where a file beside the CSV goes is named as that, before the run
    (tmp_path / "r.sizes.png").mkdir()
    with pytest.raises(BatchError, match="r.sizes.png: is a folder, where this run writes a file beside r.csv"):
        run_batch(folder, model=model_file, out=tmp_path / "r.csv")


@pytest.mark.parametrize("value", ["0", "-5", "x"])
def test_bad_batch_size_is_a_usage_error(folder, model_file, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(folder), "--model", str(model_file), "--batch-size", value])
    assert exc.value.code == 2 and "whole number >= 1" in capsys.readouterr().err


def test_second_run_to_the_same_output_is_refused_and_stale_locks_recovered(tmp_path, folder, model_file):
    out = tmp_path / "r.csv"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path_for(out).write_text(f"{sleeper.pid} {__import__('socket').gethostname()}\n")
        with pytest.raises(BatchError, match=f"process {sleeper.pid}"):
            run_batch(folder, model=model_file, out=out)
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is dead now: its lock is stale and taken over
    assert run_batch(folder, model=model_file, out=out).exit_code == EXIT_OK
    assert not lock_path_for(out).exists()


def test_batch_dot_writes_the_record_beside_the_folder(tmp_path, folder, model_file, monkeypatch):
    monkeypatch.chdir(folder)
    assert main(["batch", ".", "--model", str(model_file), "-q"]) == EXIT_OK
    assert not list(folder.glob("*.emclassify.*"))
    assert (tmp_path / "particles.emclassify.csv").is_file()


def test_quiet_prints_nothing_on_success(tmp_path, folder, model_file):
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 60), dtype=np.uint8)).save(folder / "x.png")
    r = subprocess.run([sys.executable, "-m", "emclassify", "batch", str(folder), "--model", str(model_file),
                        "--out", str(tmp_path / "r.csv"), "-q"], capture_output=True, text=True)
    assert r.returncode == EXIT_OK and r.stdout == "" and r.stderr == ""


# --------------------------------------------------------------------------- kills


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path, model_file):
    """Chaos: a batch process killed with SIGKILL at several points, resumed each time."""
    if sys.platform == "win32":
        pytest.skip("SIGKILL is POSIX")
    import signal
    import time

    folder = _folder(tmp_path / "f", n=40, seed=11)
    (folder / "broken.tif").write_bytes(b"II*\x00garbage")
    reference = tmp_path / "ref.csv"
    run_batch(folder, model=model_file, out=reference, batch_size=2)
    out = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "emclassify", "batch", str(folder), "--model", str(model_file), "--out", str(out),
           "--batch-size", "2", "--workers", "1", "-q", "--resume"]
    rng = np.random.default_rng(0)
    kills = 0
    for target in sorted(rng.choice(np.arange(2, 38), size=4, replace=False)):
        proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 120
        partial = partial_path_for(out)
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if partial.read_text(encoding="utf-8").count("\n") - 1 >= target:
                    break
            except OSError:
                pass
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(cmd, capture_output=True, text=True)
    assert final.returncode == EXIT_SOME_ERRORS, final.stderr
    assert kills >= 1
    got, want = _rows(out), _rows(reference)
    assert [r["path"] for r in got] == [r["path"] for r in want]          # every file exactly once
    assert got == want


def test_manifest_paths_through_symlinked_folders_inside_the_dataset_are_allowed(tmp_path):
    real = tmp_path / "storage" / "images"
    write_tiff(real / "a.tif", np.zeros((40, 40), np.uint8))
    root = tmp_path / "ds"
    root.mkdir()
    os.symlink(real, root / "images")
    (root / "manifest.csv").write_text("path,label\nimages/a.tif,x\n")
    assert [s.relpath for s in load_dataset(root).samples] == ["images/a.tif"]
