"""`emclassify batch` end to end: mixed good/bad folders, CSV + summary, exit codes, atomicity, resume."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from emclassify import synth
from emclassify.batch import (EXIT_NOTHING_RAN, EXIT_OK, EXIT_SOME_ERRORS, partial_path_for, run_batch,
                              run_record_path_for)
from emclassify.modelfile import file_sha256
from emclassify.cli import main
from emclassify.events import BatchClassified
from emclassify.inference import CancelToken, Classifier
from emclassify.io import read_image

from conftest import make_model_file, write_tiff

GOOD = ["a/p0.tif", "a/p1.tif", "b/deep/p2.tif", "b/p3.tif", "p4.tif", "p5.tif"]
BAD = {"a/cut.tif": "cannot decode", "b/zero.png": "empty file", "fake.jpg": "not a TIFF, PNG, JPEG or BMP"}


@pytest.fixture
def mixed_folder(tmp_path):
    root = tmp_path / "particles"
    items = list(synth.iter_particles("lamellarity", len(GOOD), seed=3))
    for rel, it in zip(GOOD, items):
        write_tiff(root / rel, it.image)
    write_tiff(root / "masks" / "a" / "p0.tif", items[0].mask)      # masks/ tree
    write_tiff(root / "b" / "p3_mask.tif", items[3].mask)           # sibling
    full = write_tiff(tmp_path / "full.tif", items[0].image).read_bytes()
    (root / "a" / "cut.tif").write_bytes(full[: len(full) // 3])
    (root / "b" / "zero.png").write_bytes(b"")
    (root / "fake.jpg").write_text("not really a jpeg")
    (root / "notes.txt").write_text("lab notes")
    return root


def read_rows(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_mixed_folder_rows_columns_exit_code(tmp_path, mixed_folder, model_file):
    out = tmp_path / "out" / "result.csv"
    code = main(["batch", str(mixed_folder), "--model", str(model_file), "--out", str(out), "-q"])
    assert code == EXIT_SOME_ERRORS
    cols, rows = read_rows(out)
    assert cols == ["path", "sha256", "status", "error", "predicted_class", "confidence",
                    "prob_a", "prob_b", "prob_c", "width", "height", "mask",
                    "area_px", "diameter_px", "pixel_size_nm", "area_nm2", "diameter_nm", "warnings"]
    assert [r["path"] for r in rows] == sorted(GOOD + list(BAD), key=lambda p: tuple(p.lower().split("/")))
    by = {r["path"]: r for r in rows}
    for rel in GOOD:
        r = by[rel]
        assert r["status"] == "ok" and r["error"] == ""
        probs = [float(r[f"prob_{c}"]) for c in "abc"]
        assert abs(sum(probs) - 1) < 1e-5
        assert r["predicted_class"] == "abc"[int(np.argmax(probs))]
        assert float(r["confidence"]) == pytest.approx(max(probs), abs=1e-6)
        img = read_image(mixed_folder / rel)
        assert r["sha256"] == img.sha256 and (int(r["width"]), int(r["height"])) == (img.width, img.height)
    for rel, reason in BAD.items():
        assert by[rel]["status"] == "error" and reason in by[rel]["error"]
        assert by[rel]["predicted_class"] == "" and by[rel]["prob_a"] == ""
    summary = json.loads((tmp_path / "out" / "result.summary.json").read_text())
    assert summary["files"] == {"total": 9, "ok": 6, "error": 3, "resumed": 0, "ignored_non_image": 1,
                                "unreadable_entries": 0}
    assert summary["ignored_non_image"] == ["notes.txt"]
    assert sum(summary["counts"].values()) == 6
    assert sum(summary["percentages"].values()) == pytest.approx(100)
    assert summary["model"]["sha256"] and summary["model"]["arch"] == "lipnet-fcn" and summary["complete"]
    assert {e["path"] for e in summary["errors"]} == set(BAD)
    # atomic: nothing but the outputs in the output folder (the size histogram from the given masks,
    # which this surround model reads for the sizes though it does not look at them)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.csv", "result.sizes.png",
                                                                    "result.summary.json"]


def test_crop_model_uses_found_masks_and_notes_missing_ones(tmp_path, mixed_folder):
    model = make_model_file(tmp_path / "crop.safetensors", mode="mask")
    out = tmp_path / "r.csv"
    run_batch(mixed_folder, model=model, out=out)
    by = {r["path"]: r for r in read_rows(out)[1]}
    assert by["a/p0.tif"]["mask"] == "masks/a/p0.tif" and by["b/p3.tif"]["mask"] == "b/p3_mask.tif"
    assert by["a/p0.tif"]["warnings"] == ""
    assert by["p4.tif"]["mask"] == "" and "automatic segmentation" in by["p4.tif"]["warnings"]


def test_same_predictions_as_classifier_api(tmp_path, mixed_folder, model_file):
    out = tmp_path / "r.csv"
    run_batch(mixed_folder, model=model_file, out=out, batch_size=2)
    rows = {r["path"]: r for r in read_rows(out)[1]}
    clf = Classifier.from_file(model_file, device="cpu")
    probs = clf.predict_proba([read_image(mixed_folder / p).array for p in GOOD])
    for p, pr in zip(GOOD, probs):
        assert [float(rows[p][f"prob_{c}"]) for c in "abc"] == pytest.approx(pr.tolist(), abs=2e-6)


def test_resume_skips_done_files_and_keeps_their_rows(tmp_path, mixed_folder, model_file):
    out = tmp_path / "r.csv"
    first = run_batch(mixed_folder, model=model_file, out=out)
    before = {r["path"]: r for r in read_rows(out)[1]}
    # Drop two rows, as if the run had stopped early, and corrupt a file already done:
    header, rows = read_rows(out)
    kept = [r for r in rows if r["path"] not in ("p5.tif", "b/p3.tif")]
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, header, lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
    (mixed_folder / "a" / "p1.tif").write_bytes(b"")
    second = run_batch(mixed_folder, model=model_file, out=out, resume=True)
    after = {r["path"]: r for r in read_rows(out)[1]}
    # p5 and p3 redone identically; p1 changed since its row was written, so it is classified again
    assert after["a/p1.tif"]["status"] == "error" and after["a/p1.tif"]["error"] == "empty file (0 bytes)"
    assert {p: r for p, r in after.items() if p != "a/p1.tif"} == {p: r for p, r in before.items() if p != "a/p1.tif"}
    n_unread = sum(1 for r in kept if not r["sha256"])    # error rows of files never decoded: retried
    assert n_unread == 3
    assert second.summary["files"]["resumed"] == len(kept) - 1 - n_unread
    assert second.summary["resume"] == {"kept": len(kept) - 1 - n_unread, "changed_reclassified": 1,
                                        "gone_dropped": 0, "unread_retried": n_unread}
    assert first.exit_code == second.exit_code == EXIT_SOME_ERRORS


def test_resume_refuses_output_of_another_model(tmp_path, mixed_folder, model_file):
    out = tmp_path / "r.csv"
    run_batch(mixed_folder, model=model_file, out=out)
    other = make_model_file(tmp_path / "other.safetensors", seed=1)
    code = main(["batch", str(mixed_folder), "--model", str(other), "--out", str(out), "--resume", "-q"])
    assert code == EXIT_NOTHING_RAN


def test_partial_file_rows_survive_a_killed_run(tmp_path, mixed_folder, model_file):
    out = tmp_path / "r.csv"
    run_batch(mixed_folder, model=model_file, out=out)
    rows = out.read_text().splitlines()
    out.unlink()
    out.with_name("r.summary.json").unlink()
    partial_path_for(out).write_text("\n".join(rows[:3]) + "\n" + rows[3][:10])  # torn last line
    run_record_path_for(out).write_text(json.dumps({"model_sha256": file_sha256(model_file),
                                                    "folder": str(mixed_folder.resolve())}))
    assert [r.split(",")[0] for r in rows[1:3]] == ["a/cut.tif", "a/p0.tif"]
    (mixed_folder / "a" / "cut.tif").unlink()  # gone since: its row is dropped, not kept
    outcome = run_batch(mixed_folder, model=model_file, out=out, resume=True)
    assert outcome.summary["files"]["resumed"] == 1
    assert outcome.summary["resume"]["gone_dropped"] == 1
    assert "a/cut.tif" not in {r.path for r in outcome.results}
    assert not partial_path_for(out).exists() and not run_record_path_for(out).exists()


def test_cancel_keeps_what_is_done(tmp_path, mixed_folder, model_file):
    cancel = CancelToken()
    seen = []

    def on_event(e):
        if isinstance(e, BatchClassified):
            seen.append(e.batch.done)
            cancel.cancel()

    outcome = run_batch(mixed_folder, model=model_file, out=tmp_path / "r.csv", batch_size=2,
                        progress=on_event, cancel=cancel)
    assert seen == [2] and outcome.summary["complete"] is False
    assert len(read_rows(tmp_path / "r.csv")[1]) == 2


def test_nothing_to_run(tmp_path, model_file):
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(tmp_path / "empty"), "--model", str(model_file), "-q"]) == EXIT_NOTHING_RAN
    assert main(["batch", str(tmp_path / "missing"), "--model", str(model_file), "-q"]) == EXIT_NOTHING_RAN
    bad_model = tmp_path / "bad.safetensors"
    bad_model.write_text("nope")
    write_tiff(tmp_path / "one" / "x.tif", np.zeros((5, 5), np.uint8))
    assert main(["batch", str(tmp_path / "one"), "--model", str(bad_model), "-q"]) == EXIT_NOTHING_RAN


def test_default_model_on_bundled_samples_via_console(tmp_path):
    """The README's main job: bundled model, bundled samples, real entry point, in a subprocess."""
    from emclassify.assets import sample_folder

    out = tmp_path / "samples.csv"
    r = subprocess.run([sys.executable, "-m", "emclassify", "batch", str(sample_folder()), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == EXIT_OK, r.stderr
    assert "40 of 40 files classified" in r.stdout
    cols, rows = read_rows(out)
    assert cols[6:9] == ["prob_unilamellar", "prob_multilamellar", "prob_uncertain"]
    assert len(rows) == 40 and all(row["status"] == "ok" for row in rows)
    # Each sample's true class is its folder name (30 of the 40 are unilamellar): the bundled model
    # must beat "always unilamellar" and recognise multilamellar particles.
    truth = [row["path"].split("/")[1] for row in rows]
    correct = sum(t == row["predicted_class"] for t, row in zip(truth, rows))
    assert correct >= 33
    assert any(t == row["predicted_class"] == "multilamellar" for t, row in zip(truth, rows))


def test_batch_run_object_shared_by_cli_and_gui(tmp_path, mixed_folder, model_file):
    from emclassify.batch import BatchError, BatchRun
    from emclassify.events import BatchStarted

    run = BatchRun(mixed_folder, model_file, batch_size=2)
    events = []
    batches = list(run.batches(progress=events.append))
    assert isinstance(events[0], BatchStarted) and events[0].total == run.total
    assert sum(isinstance(e, BatchClassified) for e in events) == len(batches)
    assert run.complete and len(run.results) == run.total
    assert run.summary()["csv"] is None  # not saved yet: no invented file name
    csv_path, summary_path, summary = run.save(tmp_path / "rec.csv")
    assert summary["csv"] == "rec.csv" and summary_path.is_file()
    # the same rows as the CLI's record of the same folder and model
    run_batch(mixed_folder, model=model_file, out=tmp_path / "cli.csv", batch_size=2)
    assert csv_path.read_text() == (tmp_path / "cli.csv").read_text()
    # reopened for review: the rows and the model that wrote them
    back = BatchRun.from_csv(csv_path)
    assert [r.path for r in back.results] == [r.path for r in run.results]
    assert back.trained.sha256 == run.trained.sha256 and back.root == run.root
    other = make_model_file(tmp_path / "other.safetensors", seed=5)
    with pytest.raises(BatchError, match="another model"):
        BatchRun.from_csv(csv_path, model=other)
    with pytest.raises(BatchError, match="reopened for review"):
        list(back.batches())


def test_reopening_a_record_with_a_hand_edited_summary_never_crashes(tmp_path, mixed_folder, model_file):
    from emclassify.batch import BatchError, BatchRun

    out = tmp_path / "rec.csv"
    run_batch(mixed_folder, model=model_file, out=out, batch_size=2)
    summary_path = out.with_name("rec.summary.json")
    good = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**good, "elapsed_s": "soon", "ignored_non_image": 7,
                                        "unreadable_entries": "x", "complete": "yes"}))
    back = BatchRun.from_csv(out)
    assert back.elapsed == 0.0 and back.listing.ignored == [] and back.complete
    for broken in ("{", "[]", json.dumps({**good, "folder": str(tmp_path / "gone")}),
                   json.dumps({**good, "model": {"path": str(tmp_path / "none.safetensors")}})):
        summary_path.write_text(broken)
        with pytest.raises(BatchError):
            BatchRun.from_csv(out)


def test_copies_of_the_same_file_are_counted_and_said(tmp_path, capsys):
    """A folder copied into itself counts its particles twice: the record says which files are copies."""
    import shutil

    from emclassify.assets import default_model_path
    from emclassify.batch import duplicate_files

    one = default_model_path().parents[1] / "samples" / "images" / "unilamellar"
    folder = tmp_path / "run"
    shutil.copytree(one, folder / "a")
    shutil.copytree(one, folder / "a" / "again")
    n = len(list(one.iterdir()))
    outcome = run_batch(folder, out=tmp_path / "r.csv")
    copies = outcome.summary["duplicates"]
    assert copies["files"] == n
    assert {frozenset((c["path"], c["same_as"])) for c in copies["listed"]} == {
        frozenset((f"a/{p.name}", f"a/again/{p.name}")) for p in one.iterdir()}
    main(["batch", str(folder), "--out", str(tmp_path / "cli.csv")])
    assert f"WARNING: {n} file(s) are byte-for-byte copies" in capsys.readouterr().out
    assert "duplicates" not in run_batch(one, out=tmp_path / "one.csv").summary

    # a micrograph given twice: its rows share one file, counted once as a copy
    fields = tmp_path / "fields"
    synth.generate_micrographs(fields, "lamellarity", 1, seed=5, side=256, per_micrograph=3)
    image = next((fields / "images").iterdir())
    shutil.copy(image, fields / "images" / ("copy-" + image.name))
    from emclassify.finding import ClassicalFinder

    twice = run_batch(fields / "images", out=tmp_path / "m.csv", finder=ClassicalFinder())
    assert twice.summary["duplicates"] == {"files": 1, "listed": [{"path": image.name, "same_as": "copy-" + image.name}]}
    assert duplicate_files([]) == {}


def test_masks_that_mark_the_background_are_said(tmp_path, capsys):
    """Masks of the other convention (particle 0, background non-zero) are read as a particle the size of
    the image; a tightly cropped particle touches the borders too, but encloses no hole."""
    import shutil

    from emclassify.assets import default_model_path
    from emclassify.segment import background_mask_warning, mask_warnings, several_particles_warning

    yy, xx = np.mgrid[:64, :64] - 31.5
    small = yy ** 2 + xx ** 2 <= 15 ** 2
    assert "does it mark the background?" in background_mask_warning(~small)
    assert background_mask_warning(small) == ""
    assert background_mask_warning(yy ** 2 + xx ** 2 <= 32 ** 2) == ""   # tight crop: the corners touch the border
    assert background_mask_warning(np.ones((64, 64), bool)) == ""        # a particle filling its image

    two = small | np.roll(small, 34, axis=1)
    assert "mask holds 2 separate regions" in several_particles_warning(two)
    assert several_particles_warning(small | (np.abs(yy - 30) + np.abs(xx - 30) < 2)) == ""   # a speck beside it
    assert mask_warnings(small) == []

    samples = tmp_path / "samples"
    shutil.copytree(default_model_path().parents[1] / "samples", samples)
    assert run_batch(samples, out=tmp_path / "as_made.csv").summary["mask_problems"] == {"background": 0, "several_particles": 0}
    for p in (samples / "masks").rglob("*.tif"):
        m = read_image(p).array
        write_tiff(p, np.where(m > 0, 0, 255).astype(np.uint8))
    outcome = run_batch(samples, out=tmp_path / "inverted.csv")
    assert outcome.summary["mask_problems"]["background"] == 40
    main(["batch", str(samples), "--out", str(tmp_path / "cli.csv")])
    assert "WARNING: 40 mask(s) cover their image's border all round" in capsys.readouterr().out
    # and before training on them
    from emclassify.input_decision import decide_preprocess
    from emclassify.io import load_dataset

    assert "40 of the 40 masks looked at cover" in decide_preprocess(load_dataset(samples).samples)[1]["note"]
    # masks holding two particles each
    for p in (samples / "masks").rglob("*.tif"):
        m = read_image(p).array == 0   # the particle again
        write_tiff(p, ((m | np.roll(m, m.shape[1] // 2, axis=1)) * 255).astype(np.uint8))
    doubled = run_batch(samples, out=tmp_path / "doubled.csv")
    assert doubled.summary["mask_problems"]["several_particles"] >= 35
    assert "masks looked at hold several separate regions" in decide_preprocess(load_dataset(samples).samples)[1]["note"]
    shutil.copytree(default_model_path().parents[1] / "samples", tmp_path / "fine")
    assert "note" not in decide_preprocess(load_dataset(tmp_path / "fine").samples)[1]


def test_a_model_that_does_not_look_at_masks_still_reads_them(tmp_path):
    """A surround model without features classifies the whole image, but a given mask still gives the
    particle's size, the mask checks and its contrast; an unreadable mask costs it only the size."""
    import shutil

    from emclassify.assets import default_model_path

    model = make_model_file(tmp_path / "surround.safetensors", mode="surround")
    assert not Classifier.from_file(model, device="cpu").config.uses_mask
    samples = tmp_path / "samples"
    shutil.copytree(default_model_path().parents[1] / "samples", samples)
    rows = {r.path: r for r in run_batch(samples, model=model, out=tmp_path / "a.csv").results}
    assert all(r.ok and r.mask and r.size is not None and r.size.area_px > 0 for r in rows.values())
    # the size is the mask's, not the image's
    some = next(iter(rows.values()))
    assert some.size.area_px < some.height * some.width
    mask_files = sorted((samples / "masks").rglob("*.tif"))
    mask_files[0].write_bytes(b"not a tiff")
    for p in mask_files[1:]:   # masks of the other convention: said, though the model does not use them
        write_tiff(p, np.where(read_image(p).array > 0, 0, 255).astype(np.uint8))
    outcome = run_batch(samples, model=model, out=tmp_path / "b.csv")
    assert outcome.summary["mask_problems"]["background"] == len(mask_files) - 1
    broken = [r for r in outcome.results if r.path.endswith(mask_files[0].name)]
    assert len(broken) == 1 and broken[0].ok and broken[0].size is None
    assert any("does not need it" in w and "; " not in w for w in broken[0].warnings)
    assert all(r.ok for r in outcome.results)
