"""Review predictions, least confident first: large view with mask outline and saliency, confirm or correct.

Decisions go to a labelled manifest + audit log (:class:`emclassify.review.ReviewStore`) in a
folder the user picks; the classified folder is never modified.
Keys: Enter/Space confirm, 1–9 correct to that class, Left/Right previous/next.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (QCheckBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QPushButton, QSplitter, QVBoxLayout, QWidget)

from emclassify.inference import Classifier, FileResult
from emclassify.io import ImageReadError, read_image, read_mask
from emclassify.review import ReviewStore, current_user
from emclassify.saliency import saliency_map

from .imaging import compose, saliency_key
from .micrograph_view import find_job
from .widgets import ZoomView, error_label
from .workers import Job


def saliency_job(report, cancel, classifier: Classifier, image, mask):
    return saliency_map(classifier, image, mask)


class ReviewTab(QWidget):
    status = Signal(str)
    error = Signal(str)
    train_requested = Signal(str)  # the labels folder: train a model on the reviewed particles

    def __init__(self, settings, classify_tab):
        super().__init__()
        self.settings = settings
        self.classify_tab = classify_tab
        self.items: List[FileResult] = []
        self.current: Optional[int] = None
        self.classifier: Optional[Classifier] = None
        self.image = self.mask = self.saliency = None
        self.job: Optional[Job] = None

        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.IconMode)
        self.gallery.setIconSize(QSize(72, 72))
        self.gallery.setResizeMode(QListWidget.Adjust)
        self.gallery.setMovement(QListWidget.Static)
        self.gallery.currentRowChanged.connect(self.show_item)
        self.view = ZoomView("Classify a folder (or open results) first;\nits least confident particles appear here.")
        fit_btn = QPushButton("Fit")
        fit_btn.setToolTip("Fit the particle to the view (mouse wheel zooms, dragging pans)")
        fit_btn.clicked.connect(self.view.fit)
        self.black = QDoubleSpinBox()
        self.black.setRange(0.0, 49.0)
        self.black.setValue(1.0)
        self.black.setSuffix(" %")
        self.black.setToolTip("black point: this percentile of the image's grey values and darker show black")
        self.white = QDoubleSpinBox()
        self.white.setRange(51.0, 100.0)
        self.white.setValue(99.0)
        self.white.setSuffix(" %")
        self.white.setToolTip("white point: this percentile of the image's grey values and brighter show white")
        self.gamma = QDoubleSpinBox()
        self.gamma.setRange(0.2, 5.0)
        self.gamma.setSingleStep(0.1)
        self.gamma.setValue(1.0)
        self.gamma.setToolTip("gamma: below 1 brightens dark membrane layers, above 1 darkens")
        for w in (self.black, self.white, self.gamma):
            w.valueChanged.connect(self.redraw)
        key = QLabel()
        key.setPixmap(saliency_key())
        key.setToolTip("saliency colour key: how strongly each pixel drove the decision")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.show_mask = QCheckBox("mask outline")
        self.show_mask.setChecked(True)
        self.show_sal = QCheckBox("saliency (what drove the decision)")
        self.show_sal.setChecked(True)
        for cb in (self.show_mask, self.show_sal):
            cb.toggled.connect(self.redraw)
        self.dest = QLineEdit(settings.value("review/dest", ""))
        self.dest.setPlaceholderText("folder for reviewed labels (manifest.csv + review_log.csv)")
        pick = QPushButton("Labels folder…")
        pick.clicked.connect(self.pick_dest)
        self.user = QLineEdit(settings.value("review/user", current_user()))
        self.user.setMaximumWidth(160)
        self.train_btn = QPushButton("Train on reviewed labels…")
        self.train_btn.setToolTip("Train a new model on the particles reviewed into the labels folder "
                                  "(opens the Train view with that folder and starts)")
        self.train_btn.clicked.connect(self.request_training)
        self.confirm_btn = QPushButton("Confirm  (Enter)")
        self.confirm_btn.clicked.connect(self.confirm)
        self.class_buttons = QHBoxLayout()
        self.message = error_label()

        right = QWidget()
        rv = QVBoxLayout(right)
        rv.addWidget(self.view, 1)
        toggles = QHBoxLayout()
        toggles.addWidget(self.show_mask)
        toggles.addWidget(self.show_sal)
        toggles.addWidget(QLabel("weak"))
        toggles.addWidget(key)
        toggles.addWidget(QLabel("strong"))
        toggles.addStretch(1)
        rv.addLayout(toggles)
        view_row = QHBoxLayout()
        for label, w in (("black", self.black), ("white", self.white), ("gamma", self.gamma)):
            view_row.addWidget(QLabel(label))
            view_row.addWidget(w)
        view_row.addWidget(fit_btn)
        view_row.addStretch(1)
        rv.addLayout(view_row)
        rv.addWidget(self.info)
        dest_row = QHBoxLayout()
        dest_row.addWidget(self.dest, 1)
        dest_row.addWidget(pick)
        dest_row.addWidget(QLabel("reviewer:"))
        dest_row.addWidget(self.user)
        dest_row.addWidget(self.train_btn)
        rv.addLayout(dest_row)
        decide = QHBoxLayout()
        decide.addWidget(self.confirm_btn)
        decide.addWidget(QLabel("or correct to:"))
        decide.addLayout(self.class_buttons)
        decide.addStretch(1)
        rv.addLayout(decide)
        rv.addWidget(self.message)
        split = QSplitter()
        split.addWidget(self.gallery)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 2)
        QVBoxLayout(self).addWidget(split)

        for key in (Qt.Key_Return, Qt.Key_Enter, Qt.Key_Space):
            QShortcut(QKeySequence(key), self, self.confirm)
        QShortcut(QKeySequence(Qt.Key_Right), self, lambda: self.step(1))
        QShortcut(QKeySequence(Qt.Key_Left), self, lambda: self.step(-1))
        for k in range(1, 10):
            QShortcut(QKeySequence(str(k)), self, lambda k=k: self.correct_index(k - 1))

    # ------------------------------------------------------------------ content
    def refresh(self) -> None:
        """Load the classify tab's ok results, least confident first."""
        tab = self.classify_tab
        run = tab.run_record
        if run is None:
            return
        self.classifier = None
        self.items = sorted((r for r in run.results if r.ok), key=lambda r: r.confidence)
        self.gallery.clear()
        for r in self.items:
            item = QListWidgetItem(f"{r.predicted_class}\n{r.confidence:.2f}")
            if r.particle is not None:  # no thumbnail: each would mean finding its micrograph's particles
                item.setToolTip(f"{r.path}, particle {r.particle.index}")
                self.gallery.addItem(item)
                continue
            pix = tab.thumbs.get(run.root / r.path)
            if pix is not None:
                item.setIcon(QIcon(pix))
            item.setToolTip(r.path)
            self.gallery.addItem(item)
        while self.class_buttons.count():
            w = self.class_buttons.takeAt(0).widget()
            if w:
                w.deleteLater()
        for i, c in enumerate(run.classes):
            b = QPushButton(f"{i + 1}: {c}")
            b.clicked.connect(lambda _=False, i=i: self.correct_index(i))
            self.class_buttons.addWidget(b)
        if self.items:
            self.gallery.setCurrentRow(0)

    def review(self, result) -> bool:
        """Show ``result`` (a row of the classify tab's run) for review; False when it is not reviewable."""
        for i, r in enumerate(self.items):
            if r is result:
                self.gallery.setCurrentRow(i)
                return True
        return False

    def step(self, delta: int) -> None:
        if self.items:
            self.gallery.setCurrentRow(max(0, min(len(self.items) - 1, self.gallery.currentRow() + delta)))

    def show_item(self, row: int) -> None:
        if row < 0 or row >= len(self.items):
            return
        self.current = row
        r = self.items[row]
        root = self.classify_tab.run_record.root
        self.message.setText("")
        try:
            if r.particle is not None:  # a particle of a micrograph run: cut out as the classifier saw it
                lookup = self.classify_tab.micrograph_panel.lookup
                if lookup is None:
                    raise ValueError(self.classify_tab.micrograph_panel.caption.text())
                if not lookup.has(r.path):  # finding its micrograph's particles again takes a while
                    self.image = self.mask = None
                    self.message.setText(f"finding the particles of {r.path}…")
                    self.find_job = Job(find_job, lookup, r.path)
                    self.find_job.row = row
                    # bound methods, not lambdas: a lambda would run in the worker's thread
                    self.find_job.done.connect(self._particles_found)
                    self.find_job.failed.connect(self.message.setText)
                    self.find_job.start()
                    return
                self.image, self.mask = lookup.particle(r)
            else:
                self.image = read_image(root / r.path).array
                self.mask = read_mask(root / r.mask, self.image.shape) if r.mask else None
        except (ImageReadError, ValueError) as exc:
            self.image = self.mask = None
            self.message.setText(str(exc))
            return
        self.saliency = None
        probs = ", ".join(f"{c} {p:.3f}" for c, p in zip(self.classify_tab.run_record.classes, r.probabilities))
        where = r.path if r.particle is None else f"{r.path}, particle {r.particle.index}"
        self.info.setText(f"<b>{where}</b><br>predicted <b>{r.predicted_class}</b> "
                          f"(confidence {r.confidence:.3f}); {probs}")
        self.redraw()
        self.compute_saliency()

    def compute_saliency(self) -> None:
        if self.image is None or self.classify_tab.run_record is None:
            return
        if self.job is not None and self.job.is_running():
            self.job.cancel.cancel()
        if self.classifier is None:
            self.classifier = Classifier(self.classify_tab.run_record.trained, device="cpu")
        row = self.current
        self.job = Job(saliency_job, self.classifier, self.image, self.mask)
        self.job.row = row
        self.job.done.connect(self._saliency_done)  # a bound method runs in the GUI thread, a lambda would not
        self.job.failed.connect(self.message.setText)
        self.job.start()

    def _particles_found(self, _result) -> None:
        row = getattr(self.sender(), "row", None)
        if row is not None and row == self.current:
            self.show_item(row)

    def _saliency_done(self, sal) -> None:
        self._saliency_ready(getattr(self.sender(), "row", None), sal)

    def _saliency_ready(self, row, sal) -> None:
        if row == self.current:
            self.saliency = sal
            if sal is None:
                self.show_sal.setText("saliency (not available for the SVM)")
            self.redraw()

    def redraw(self, *_):
        if self.image is None:
            return
        qimg = compose(self.image, self.mask, self.saliency, self.show_mask.isChecked(), self.show_sal.isChecked(),
                       contrast=(self.black.value(), self.white.value(), self.gamma.value()))
        self.view.set_pixmap(QPixmap.fromImage(qimg))

    # ------------------------------------------------------------------ decisions
    def pick_dest(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Folder for reviewed labels", self.dest.text())
        if d:
            self.dest.setText(d)

    def request_training(self) -> None:
        dest = self.dest.text().strip()
        if not dest or not (Path(dest) / "manifest.csv").is_file():
            self.message.setText("Review some particles into a labels folder first: training uses its manifest.csv.")
            return
        self.train_requested.emit(dest)

    def confirm(self) -> None:
        if self.current is not None:
            self.record(self.items[self.current].predicted_class)

    def correct_index(self, k: int) -> None:
        classes = self.classify_tab.run_record.classes
        if self.current is not None and 0 <= k < len(classes):
            self.record(classes[k])

    def record(self, label: str) -> None:
        dest = self.dest.text().strip()
        run = self.classify_tab.run_record
        root = run.root
        if not dest:
            self.message.setText("Choose a folder for the reviewed labels first (Labels folder…).")
            return
        r = self.items[self.current]
        trained = run.trained
        try:
            store = ReviewStore(dest, user=self.user.text().strip() or None, classified_root=root)
            model_sha = trained.sha256 if trained else ""
            if r.particle is not None:
                if self.image is None:
                    raise ValueError("the particle could not be cut out of its micrograph")
                store.record_particle(root / r.path, r.particle.index, self.image, self.mask, label,
                                      predicted=r.predicted_class, confidence=r.confidence, sha256=r.sha256,
                                      model_sha256=model_sha)
            else:
                store.record(root / r.path, label, predicted=r.predicted_class, confidence=r.confidence,
                             sha256=r.sha256, model_sha256=model_sha, mask=(root / r.mask) if r.mask else None)
        except (OSError, ValueError) as exc:
            self.message.setText(f"could not save the review to {dest}: {exc}")
            return
        self.settings.setValue("review/dest", dest)
        self.settings.setValue("review/user", self.user.text())
        item = self.gallery.item(self.current)
        item.setText(f"✓ {label}\n{r.confidence:.2f}")
        self.status.emit(f"{r.path}: {'confirmed' if label == r.predicted_class else 'corrected to'} {label}")
        self.step(1)
