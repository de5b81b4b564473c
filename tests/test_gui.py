"""The desktop app driven through its real widgets (pytest-qt, offscreen). Screenshots go to a temp dir."""
from __future__ import annotations

import csv
import os

import pytest

pytest.importorskip("PySide6", reason="the GUI needs PySide6 (pip install 'emclassify[gui]')")

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from emclassify import synth  # noqa: E402
from emclassify.batch import run_batch  # noqa: E402

from conftest import write_tiff  # noqa: E402

SHOTS = os.environ.get("EMCLASSIFY_SCREENSHOTS")


@pytest.fixture
def window(qtbot, tmp_path):
    from emclassify_gui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    w = MainWindow(settings)
    w.resize(1200, 820)
    # pytest-qt closes the window before this fixture's teardown; the "export before closing?"
    # question is its own test, so it is answered "discard" here.
    qtbot.addWidget(w, before_close_func=lambda win: setattr(win, "confirm_discard", lambda: True))
    w.show()
    yield w
    w.confirm_discard = lambda: True
    w.close()


def shot(window, tmp_path, name):
    folder = SHOTS or str(tmp_path)
    path = os.path.join(folder, f"{name}.png")
    assert window.grab().save(path, "PNG")
    return path


@pytest.fixture
def folder_with_corrupt_file(tmp_path):
    root = tmp_path / "particles"
    for i, it in enumerate(synth.iter_particles("lamellarity", 20, seed=4, proportions=(0.6, 0.3, 0.1))):
        write_tiff(root / it.label / f"p{i:02d}.tif", it.image)
        write_tiff(root / "masks" / it.label / f"p{i:02d}.tif", it.mask)
    (root / "broken.tif").write_bytes(b"II*\x00garbage")
    return root


def run_classify(qtbot, window, folder, model=None):
    tab = window.classify
    tab.folder.setText(str(folder))
    if model:
        assert tab.set_model(str(model))
    with qtbot.waitSignal(tab.finished, timeout=120_000):
        qtbot.mouseClick(tab.run_btn, Qt.LeftButton)
    return tab


def test_classify_folder_rows_error_progress_export(qtbot, window, folder_with_corrupt_file, tmp_path):
    tab = run_classify(qtbot, window, folder_with_corrupt_file)
    assert len(tab.model.rows) == 21
    assert tab.progress.value() == tab.progress.maximum() == 21
    assert "broken.tif" in tab.message.text() and "cannot decode" in tab.message.text()
    # filters: errors only, a class, a confidence threshold
    tab.errors_only.setChecked(True)
    assert tab.proxy.rowCount() == 1
    tab.errors_only.setChecked(False)
    tab.conf_filter.setValue(0.0)
    assert tab.proxy.rowCount() == 0
    tab.conf_filter.setValue(1.0)
    tab.class_filter.setCurrentIndex(1)
    cls = tab.class_filter.currentData()
    assert tab.proxy.rowCount() == sum(r.predicted_class == cls for r in tab.model.rows)
    # sorting by confidence (column 3) ascending
    tab.table.sortByColumn(3, Qt.AscendingOrder)
    shot(window, tmp_path, "classify")
    # export equals what `emclassify batch` writes for the same folder and model
    exported = tab.export(tmp_path / "gui.csv")
    run_batch(folder_with_corrupt_file, out=tmp_path / "batch.csv")
    assert exported.read_text() == (tmp_path / "batch.csv").read_text()
    assert (tmp_path / "gui.summary.json").is_file()
    # composition chart and adjusted percentages shown
    assert "adjusted" in tab.composition.text()
    # no header is cut off: each column is at least as wide as its title
    header = tab.table.horizontalHeader()
    for col, text in enumerate(tab.model.headers()[2:], start=2):
        assert header.sectionSize(col) >= header.fontMetrics().horizontalAdvance(text)


def test_cancel_mid_run_keeps_what_is_done(qtbot, window, tmp_path):
    root = tmp_path / "many"
    for i, it in enumerate(synth.iter_particles("lamellarity", 160, seed=2)):
        write_tiff(root / f"p{i:03d}.tif", it.image)
    tab = window.classify
    tab.folder.setText(str(root))
    with qtbot.waitSignal(tab.finished, timeout=120_000):
        tab.run()
        qtbot.waitUntil(lambda: len(tab.model.rows) > 0, timeout=60_000)
        tab.cancel()
    assert 0 < len(tab.model.rows) < 160
    assert "cancelled" in tab.progress_label.text()
    assert tab.export_btn.isEnabled()


def test_review_correction_written_to_sidecar(qtbot, window, folder_with_corrupt_file, tmp_path):
    run_classify(qtbot, window, folder_with_corrupt_file)
    review = window.review
    assert len(review.items) == 20
    confs = [r.confidence for r in review.items]
    assert confs == sorted(confs)  # least confident first
    qtbot.waitUntil(lambda: review.saliency is not None, timeout=30_000)
    shot(window.review, tmp_path, "review")
    # the particle fills the view although it was drawn while the Review tab was hidden
    window.tabs.setCurrentWidget(review)
    qtbot.waitUntil(lambda: review.view.isVisible())
    shown = review.view.mapFromScene(review.view.item.sceneBoundingRect()).boundingRect()
    assert shown.width() >= 0.8 * review.view.viewport().width() or \
        shown.height() >= 0.8 * review.view.viewport().height()
    # judging membranes: zoom survives a redraw, contrast changes what is shown
    before = review.view.item.pixmap().toImage()
    review.view.zoom_by(2.0)
    zoom = review.view.zoom()
    review.gamma.setValue(0.5)
    assert review.view.zoom() == pytest.approx(zoom)
    assert review.view.item.pixmap().toImage() != before
    review.view.fit()
    assert review.view.zoom() < zoom
    labels_dir = tmp_path / "reviewed"
    review.dest.setText(str(labels_dir))
    first = review.items[0]
    other = next(c for c in window.classify.model.classes if c != first.predicted_class)
    review.correct_index(window.classify.model.classes.index(other))
    second = review.items[1]
    review.confirm()
    with open(labels_dir / "review_log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    assert [r["action"] for r in log] == ["correct", "confirm"]
    assert log[0]["label"] == other and log[0]["predicted_class"] == first.predicted_class and log[0]["user"]
    assert log[0]["sha256"] == first.sha256 and log[0]["time_utc"]
    from emclassify.io import load_dataset

    ds = load_dataset(labels_dir)  # the corrections are a dataset training can use
    assert {s.label for s in ds.samples} == {other, second.predicted_class}
    assert all(s.mask is not None for s in ds.samples)
    # nothing was written into the classified folder
    assert not any(p.suffix == ".csv" for p in folder_with_corrupt_file.rglob("*"))
    # retrain from the reviewed labels in one step: the Train view takes the labels folder and starts
    for _ in range(6):
        review.confirm()
    train = window.train
    with qtbot.waitSignal(train.finished, timeout=300_000):
        qtbot.mouseClick(review.train_btn, Qt.LeftButton)
    assert window.tabs.currentWidget() is train and train.dataset.text() == str(labels_dir)
    model = tmp_path / "reviewed.safetensors"
    assert train.out.text() == str(model)
    assert model.is_file() or train.message.text()  # a model, or a plain reason (e.g. too few labels)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    synth.generate(root, "lamellarity", 48, seed=3, proportions=(0.5, 0.3, 0.2))
    return root


def test_short_training_run_produces_loadable_model(qtbot, window, tiny_dataset, tmp_path):
    tab = window.tabs.widget(2)
    tab.dataset.setText(str(tiny_dataset))
    tab.out.setText(str(tmp_path / "gui-model.safetensors"))
    tab.form.arch.setCurrentText("lipnet1")
    tab.form.size.setValue(24)
    tab.form.epochs.setValue(2)
    assert tab.form.configs()[1].majority_ratio == 0.0  # the core's default, shown in the form
    assert tab.form.majority_ratio.text() == "every particle"
    tab.form.majority_ratio.setValue(0.4)
    assert tab.form.configs()[1].majority_ratio == 1.0  # under 1 but not off: the smallest valid ratio
    tab.form.majority_ratio.setValue(3)
    with qtbot.waitSignal(tab.finished, timeout=120_000):
        qtbot.mouseClick(tab.start_btn, Qt.LeftButton)
    # a 2-epoch model on 30 particles: the guardrails must say so in the view, loudly
    assert "not better than always answering" in tab.message.text()
    assert "only 5 training examples" in tab.message.text()
    assert len(tab.history) == 2
    window.tabs.setCurrentIndex(2)
    shot(window, tmp_path, "train")
    from emclassify.modelfile import load_model

    trained = load_model(tmp_path / "gui-model.safetensors")
    assert trained.card.arch == "lipnet1" and trained.card.training["epochs"] == 2
    assert trained.card.training["majority_ratio"] == 3.0
    assert window.classify.model_path.text() == str(tmp_path / "gui-model.safetensors")


def test_cv_view_shows_confusion_matrix_and_exports(qtbot, window, tiny_dataset, tmp_path):
    tab = window.cv
    tab.dataset.setText(str(tiny_dataset))
    for a, cb in tab.arch_boxes.items():
        cb.setChecked(a in ("lipnet1", "svm"))
    tab.folds.setValue(2)
    tab.form.size.setValue(24)
    tab.form.epochs.setValue(2)
    with qtbot.waitSignal(tab.finished, timeout=300_000):
        tab.run()
    assert tab.message.text() == "", tab.message.text()   # the job's error, if it failed
    assert tab.show_arch.count() == 2
    assert tab.table.rowCount() == 3 and tab.table.columnCount() == 6
    assert "lipnet1 vs svm" in tab.verdict.text()
    assert tab.confusion.figure.axes  # the heat map was drawn
    window.tabs.setCurrentIndex(3)
    shot(window, tmp_path, "cross-validate")
    report = tab.export(tmp_path / "report")
    assert report.name == "compare.md" and (tmp_path / "report" / "svm" / "confusion.png").is_file()


def test_bad_folder_shows_plain_error(qtbot, window, tmp_path):
    tab = window.classify
    tab.folder.setText(str(tmp_path / "nope"))
    tab.run()
    assert "not a folder" in tab.message.text()
    assert "not a folder" in window.error_label.text()


def test_settings_persist(qtbot, tmp_path, folder_with_corrupt_file, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from emclassify_gui.main_window import MainWindow

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.Discard)
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat)
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.classify.folder.setText(str(folder_with_corrupt_file))
    with qtbot.waitSignal(w.classify.finished, timeout=120_000):
        w.classify.run()
    w.tabs.setCurrentIndex(1)
    w.close()
    assert asked  # unexported results: the user was asked before the window closed
    again = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(again)
    assert again.classify.folder.text() == str(folder_with_corrupt_file)
    assert again.tabs.currentIndex() == 1


def test_selftest_entry_point(tmp_path):
    import subprocess
    import sys

    png = tmp_path / "selftest.png"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # timeout: a liveness guard (the self-test gives up after its own 300 s), so that a self-test
    # stuck on a dialog fails here instead of hanging the suite
    r = subprocess.run([sys.executable, "-m", "emclassify_gui", "--selftest", "--screenshot", str(png)],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen", "TMPDIR": str(scratch)})
    assert r.returncode == 0, r.stderr
    assert "selftest: OK" in r.stdout and png.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in scratch.iterdir() if p.name.startswith("emclassify-selftest-")]  # its settings removed


def test_a_run_whose_images_lack_the_masks_the_model_learnt_says_so(window, tmp_path):
    """The run-level warning of the core (emclassify.reports.run_warnings) reaches the window."""
    import shutil
    from pathlib import Path

    import emclassify

    bare = tmp_path / "bare"
    shutil.copytree(Path(emclassify.__file__).parent / "data" / "samples" / "images", bare)  # the masks left behind
    out = tmp_path / "bare.csv"
    run_batch(bare, out=out)
    tab = window.classify
    assert tab.open_results(out)
    assert "40 of the 40 images classified had no mask" in tab.message.text()
    # and what the model learnt from is shown with it (emclassify.input_decision.training_data_summary)
    assert "trained on: images of about" in tab.card.toPlainText()
    assert "particles darker than their surroundings" in tab.card.toPlainText()


def test_open_headless_results_for_review_and_unsaved_warning(qtbot, window, folder_with_corrupt_file, tmp_path,
                                                              monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    out = tmp_path / "headless.csv"
    run_batch(folder_with_corrupt_file, out=out)  # a run made on the command line
    tab = window.classify
    assert tab.open_results(out)
    assert len(tab.model.rows) == 21 and not tab.unsaved
    assert "adjusted" in tab.composition.text() and "broken.tif" in tab.message.text()
    window.review.refresh()
    assert len(window.review.items) == 20  # the ok rows, ready to review
    # a record whose summary is gone cannot name its model: a plain message, nothing shown changes
    (tmp_path / "headless.summary.json").unlink()
    assert not tab.open_results(out) and "summary" in tab.message.text()

    run_classify(qtbot, window, folder_with_corrupt_file)
    assert tab.unsaved
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.Cancel)
    assert not window.confirm_discard() and asked  # cancel keeps the window open
    tab.export(tmp_path / "saved.csv")
    assert not tab.unsaved and window.confirm_discard()


def test_contrast_stretch_black_white_gamma():
    import numpy as np

    from emclassify_gui.imaging import stretch

    ramp = np.linspace(0, 1000, 101, dtype=np.float32)
    plain = stretch(ramp, 0, 100)
    assert plain[0] == 0 and plain[-1] == 255 and np.all(np.diff(plain.astype(int)) >= 0)
    narrow = stretch(ramp, 25, 75)
    assert narrow[20] == 0 and narrow[80] == 255  # outside the chosen percentiles: black and white
    bright = stretch(ramp, 0, 100, gamma=0.5)
    assert bright[25] > plain[25] and bright[0] == 0 and bright[-1] == 255


def test_micrograph_mode_outlines_click_to_row_and_review(qtbot, window, tmp_path):
    """Whole micrographs from the window: one row per particle, the micrograph shown with class-coloured
    outlines, a click on a particle selects its row, and a reviewed particle becomes a training crop."""
    fields = tmp_path / "fields"
    synth.generate_micrographs(fields, "lamellarity", 2, seed=5, side=384, per_micrograph=6)
    tab = window.classify
    tab.input_kind.setCurrentIndex(tab.input_kind.findData("micrographs"))
    assert tab.finder_row.isVisible() and not tab.finder_model.isVisible()  # classical needs no file
    tab.polarity.setCurrentIndex(tab.polarity.findData("dark"))   # the classical finder's default, said
    run_classify(qtbot, window, fields / "images")
    assert tab.settings.value("classify/polarity") == "dark"   # remembered for the next session
    from emclassify_gui.classify_tab import ClassifyTab
    again = ClassifyTab(tab.settings)
    qtbot.addWidget(again)
    assert again.polarity.currentData() == "dark"
    rows = tab.model.rows
    assert rows and all(r.particle is not None for r in rows if r.status == "ok")
    assert tab.right_pages.isTabVisible(1)
    first = next(r for r in rows if r.ok)
    tab.table.setCurrentIndex(tab.proxy.mapFromSource(tab.model.index(rows.index(first), 1)))
    panel = tab.micrograph_panel
    qtbot.waitUntil(lambda: panel.shown is not None and not panel.view.item.pixmap().isNull(), timeout=60_000)
    shot(window, tmp_path, "micrographs")
    # a click on another particle's centre selects that particle's row
    relpath, image, det = panel.shown
    other = next(p for p in det.particles if p.index != first.particle.index)
    cx, cy = other.centroid
    assert det.labels[int(cy), int(cx)] == other.index  # the test clicks inside the particle
    panel._clicked(cx + 0.5, cy + 0.5)
    current = tab.model.rows[tab.proxy.mapToSource(tab.table.currentIndex()).row()]
    assert current.path == relpath and current.particle.index == other.index
    # review it: the crop and mask the classifier saw go to the labels folder, grouped by micrograph
    window._review_result(current)
    review = window.review
    assert window.tabs.currentWidget() is review and review.items[review.current] is current
    assert review.image is not None and review.mask is not None and review.mask.any()
    labels_dir = tmp_path / "reviewed"
    review.dest.setText(str(labels_dir))
    review.confirm()
    from emclassify.io import load_dataset

    ds = load_dataset(labels_dir)
    assert [s.group for s in ds.samples] == [os.path.splitext(os.path.basename(relpath))[0]]
    assert ds.samples[0].label == current.predicted_class and ds.samples[0].mask is not None
    # a micrograph whose particles are not in memory is searched in a worker, not the GUI thread
    panel.lookup._cache.clear()
    other_row = next(r for r in review.items if r is not current)
    window._review_result(other_row)
    assert review.image is None and "finding the particles" in review.message.text()
    qtbot.waitUntil(lambda: review.image is not None, timeout=60_000)
    assert review.items[review.current] is other_row and review.mask.any()


def test_a_record_with_micrographs_in_doubt_says_so_when_opened(qtbot, window, tmp_path):
    """A finder's warning on a micrograph (e.g. particles unlike the learned finder's own) is shown, not
    only written in the rows."""
    from emclassify.finding import ClassicalFinder

    class DoubtingFinder(ClassicalFinder):
        def find(self, image, pixel_size_nm=None):
            det = super().find(image, pixel_size_nm)
            det.warnings.append("these particles are in doubt")
            return det

    fields = tmp_path / "fields"
    synth.generate_micrographs(fields, "lamellarity", 2, seed=5, side=256, per_micrograph=4)
    out = tmp_path / "doubted.csv"
    run_batch(fields / "images", out=out, finder=DoubtingFinder())
    tab = window.classify
    assert tab.open_results(out)
    text = tab.message.text()
    assert "2 micrograph(s) whose particles are in doubt" in text and "these particles are in doubt" in text
    assert tab.micrographs and tab.finder_name.currentData() == "classical"  # Run would classify it as it was
    assert tab.polarity.currentData() == "dark"   # the classical finder's, recorded in the summary
    tab.polarity.setCurrentIndex(tab.polarity.findData("bright"))
    assert tab.make_finder().polarity == "bright"   # the window's choice reaches the core finder
    # and above the micrograph when one of its particles is selected
    first = next(r for r in tab.model.rows if r.ok)
    tab.table.setCurrentIndex(tab.proxy.mapFromSource(tab.model.index(tab.model.rows.index(first), 1)))
    panel = tab.micrograph_panel
    qtbot.waitUntil(lambda: panel.shown is not None, timeout=60_000)
    qtbot.wait(50)  # the caption's new height laid out before the screenshot
    assert "Warning:" in panel.caption.text() and "these particles are in doubt" in panel.caption.text()
    shot(window, tmp_path, "micrograph-in-doubt")


def test_a_job_counts_as_ended_inside_its_own_done_and_failed_handlers(qtbot):
    """Views start the next job from these handlers (the outline view after a click elsewhere):
    the job's thread is still quitting then, so asking the thread made them do nothing."""
    from PySide6.QtCore import QObject, Slot

    from emclassify_gui.workers import Job

    class View(QObject):
        def __init__(self):
            super().__init__()
            self.seen = []

        @Slot(object)
        def on_done(self, result):
            self.seen.append(("done", result, self.job.is_running()))

        @Slot(str)
        def on_failed(self, message):
            self.seen.append(("failed", message, self.job.is_running()))

    def boom(report, cancel):
        raise ValueError("no such file")

    view = View()
    for fn, signal in ((lambda report, cancel: 42, "done"), (boom, "failed")):
        view.job = job = Job(fn)
        job.done.connect(view.on_done)
        job.failed.connect(view.on_failed)
        with qtbot.waitSignal(getattr(job, signal), timeout=10_000):
            job.start()
            assert job.is_running()
        qtbot.waitUntil(lambda: len(view.seen) == (1 if signal == "done" else 2), timeout=10_000)
        job.stop_and_wait()
    assert view.seen == [("done", 42, False), ("failed", "no such file", False)]
    Job.stop_all()
    qtbot.waitUntil(lambda: not Job._running, timeout=10_000)
