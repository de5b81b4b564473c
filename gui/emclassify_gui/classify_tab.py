"""Classify a folder: pick folder and model, run with progress and cancel, browse/filter results, export."""
from __future__ import annotations

import html
from pathlib import Path
from typing import List, Optional

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton, QSplitter,
                               QTableView, QTabWidget, QTextBrowser, QVBoxLayout, QWidget)

from emclassify.assets import default_model_path
from emclassify.defaults import FINDER_NAMES
from emclassify.finding import make_finder
from emclassify.batch import BatchError, BatchRun
from emclassify.events import BatchClassified, BatchStarted
from emclassify.inference import DEFAULT_BATCH_SIZE, FileResult
from emclassify.input_decision import training_data_summary
from emclassify.modelfile import ModelFileError, load_model
from emclassify.reports import doubt_headline, flagged_micrographs, run_warnings

from .charts import CompositionChart
from .imaging import ThumbnailCache
from .micrograph_view import MicrographPanel
from .widgets import error_label
from .workers import Job

SORT_ROLE = Qt.UserRole + 1
FINDER_LABELS = {"classical": "classical (threshold + watershed; no training)",
                 "learned": "learned (a U-Net trained on outlined micrographs)"}
# The particles' contrast (core --polarity); None leaves it to the finder's default.
POLARITY_LABELS = {None: "contrast: finder's default", "dark": "particles darker than background",
                   "bright": "particles brighter than background"}


def classify_job(report, cancel, folder: str, model_path: str, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, finder=None) -> BatchRun:
    """Worker body: the core's :class:`BatchRun`, its events forwarded to the view as they happen.
    finder: a particle finder for whole micrographs (one row per particle), None for particle images."""
    run = BatchRun(folder, model_path, batch_size=batch_size, device=device, finder=finder)
    for _ in run.batches(cancel=cancel, progress=report):
        pass
    return run


def describe_card(trained) -> str:
    c = trained.card
    p = c.preprocess
    lines = [f"<b>{c.name or Path(trained.path).name}</b>", f"architecture: {c.arch}",
             f"classes: {', '.join(c.classes)}",
             f"input: {p.mode}, {p.size}×{p.size} px, {p.normalize} normalisation"]
    learnt = training_data_summary(c.data)
    if learnt:
        lines.append(f"trained on: {html.escape(learnt)}")
    for key in ("cv", "validation"):
        m = c.metrics.get(key)
        if isinstance(m, dict) and "macro_f1" in m:
            lines.append(f"{'cross-validated' if key == 'cv' else 'validation'}: accuracy "
                         f"{100 * m['accuracy']:.1f} %, macro-F1 {m['macro_f1']:.3f}")
            break
    for f in c.metrics.get("flags") or []:
        text = html.escape(f.get("message", "") if isinstance(f, dict) else str(f))
        lines.append(f"<span style='color:#b00020'><b>⚠ {text}</b></span>")
    if c.description:
        lines.append(f"<i>{c.description}</i>")
    return "<br>".join(lines)


class ResultsModel(QAbstractTableModel):
    """Rows of :class:`FileResult`, with a thumbnail column; raw values under SORT_ROLE for sorting."""

    def __init__(self, thumbs: ThumbnailCache):
        super().__init__()
        self.rows: List[FileResult] = []
        self.classes: List[str] = []
        self.root: Optional[Path] = None
        self.thumbs = thumbs

    def reset(self, classes: List[str], root: Path) -> None:
        self.beginResetModel()
        self.rows, self.classes, self.root = [], list(classes), Path(root)
        self.endResetModel()

    def add(self, results: List[FileResult]) -> None:
        if not results:
            return
        self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(results) - 1)
        self.rows.extend(results)
        self.endInsertRows()

    def find(self, relpath: str, index: int) -> Optional[int]:
        """Row number of particle ``index`` of micrograph ``relpath``."""
        for i, r in enumerate(self.rows):
            if r.path == relpath and r.particle is not None and r.particle.index == index:
                return i
        return None

    def headers(self) -> List[str]:
        return ["", "file", "predicted", "confidence"] + [f"p({c})" for c in self.classes] + ["status", "error / notes"]

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt API)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.headers())

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return self.headers()[section]
        return None

    def data(self, index, role=Qt.DisplayRole):
        r = self.rows[index.row()]
        col = index.column()
        n = len(self.classes)
        if col == 0:
            # particle rows of a micrograph run: the micrograph panel shows them, not a thumbnail
            if role == Qt.DecorationRole and self.root is not None and r.particle is None:
                return self.thumbs.get(self.root / r.path)
            if role == SORT_ROLE:
                return r.path
            return None
        if col == 1:
            value = r.path if r.particle is None else f"{r.path}  #{r.particle.index}"
        elif col == 2:
            value = r.predicted_class
        elif col == 3:
            value = r.confidence
        elif col < 4 + n:
            value = r.probabilities[col - 4] if r.probabilities else None
        elif col == 4 + n:
            value = r.status
        else:
            value = r.error or "; ".join(r.warnings)
        if role == SORT_ROLE:
            return -1.0 if value is None else value
        if role == Qt.DisplayRole:
            return "" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        if role == Qt.ToolTipRole and col >= 4 + n:
            return value
        if role == Qt.ForegroundRole and r.status == "error":
            from PySide6.QtGui import QColor

            return QColor("#b03a2e")
        return None


class ResultsFilter(QSortFilterProxyModel):
    """Filter by predicted class, confidence below a threshold, and errors only."""

    def __init__(self):
        super().__init__()
        self.setSortRole(SORT_ROLE)
        self.cls = ""
        self.below = 1.0
        self.errors_only = False

    def set_filter(self, cls: str, below: float, errors_only: bool) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.10; invalidateFilter() is deprecated there
            self.beginFilterChange()
            self.cls, self.below, self.errors_only = cls, below, errors_only
            self.endFilterChange()
        else:
            self.cls, self.below, self.errors_only = cls, below, errors_only
            self.invalidateFilter()

    def filterAcceptsRow(self, row, parent) -> bool:  # noqa: N802
        r = self.sourceModel().rows[row]
        if self.errors_only:
            return r.status == "error"
        if self.cls and r.predicted_class != self.cls:
            return False
        if self.below < 1.0 and (r.confidence is None or r.confidence >= self.below):
            return False
        return True


class ClassifyTab(QWidget):
    status = Signal(str)
    error = Signal(str)
    finished = Signal()
    results_changed = Signal()
    review_requested = Signal(object)  # a FileResult the user double-clicked, to review it

    def __init__(self, settings):
        super().__init__()
        self.settings = settings
        self.job: Optional[Job] = None
        self.run_record: Optional[BatchRun] = None  # the run shown (classified here or reopened from a CSV)
        self.summary: Optional[dict] = None
        self.unsaved = False  # results classified here and not yet exported
        self.thumbs = ThumbnailCache()

        self.folder = QLineEdit(settings.value("classify/folder", ""))
        self.folder.setPlaceholderText("folder of particle images (searched recursively)")
        self.input_kind = QComboBox()
        self.input_kind.addItem("particle images (one particle per file)", "particles")
        self.input_kind.addItem("whole micrographs (find the particles, one row each)", "micrographs")
        self.finder_name = QComboBox()
        for name in FINDER_NAMES:
            self.finder_name.addItem(FINDER_LABELS.get(name, name), name)
        self.finder_model = QLineEdit(settings.value("classify/finder_model", ""))
        self.finder_model.setPlaceholderText("finder model file (from emclassify train-finder)")
        browse_finder = QPushButton("Finder model…")
        browse_finder.clicked.connect(self.pick_finder_model)
        self.polarity = QComboBox()
        self.polarity.setToolTip("dark: bright-field TEM, cryo-EM; bright: negative stain. The classical finder's default "
                                 "is dark; a learned finder's is the contrast of its training particles, and it inverts "
                                 "micrographs of the other")
        for value, label in POLARITY_LABELS.items():
            self.polarity.addItem(label, value)
        self.polarity.setCurrentIndex(max(0, self.polarity.findData(settings.value("classify/polarity", ""))))
        self.finder_row = QWidget()
        fr = QHBoxLayout(self.finder_row)
        fr.setContentsMargins(0, 0, 0, 0)
        fr.addWidget(self.finder_name)
        fr.addWidget(self.polarity)
        fr.addWidget(self.finder_model, 1)
        fr.addWidget(browse_finder)
        self.input_kind.currentIndexChanged.connect(self._input_kind_changed)
        self.finder_name.currentIndexChanged.connect(self._input_kind_changed)
        browse_folder = QPushButton("Folder…")
        browse_folder.clicked.connect(self.pick_folder)
        self.model_path = QLineEdit(settings.value("classify/model", str(default_model_path())))
        browse_model = QPushButton("Model…")
        browse_model.clicked.connect(self.pick_model)
        default_btn = QPushButton("Bundled model")
        default_btn.clicked.connect(lambda: self.set_model(str(default_model_path())))
        self.card = QTextBrowser()
        self.card.setMaximumHeight(110)
        self.run_btn = QPushButton("Run  (Ctrl+R)")
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn = QPushButton("Cancel  (Esc)")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.export_btn = QPushButton("Export CSV…  (Ctrl+E)")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(self.export_dialog)
        self.open_btn = QPushButton("Open results…")
        self.open_btn.setToolTip("Show a CSV written by this app or by 'emclassify batch', to filter and review it")
        self.open_btn.clicked.connect(self.open_dialog)
        self.progress = QProgressBar()
        self.progress_label = QLabel("")
        self.message = error_label()

        self.class_filter = QComboBox()
        self.class_filter.addItem("all classes", "")
        self.conf_filter = QDoubleSpinBox()
        self.conf_filter.setRange(0.0, 1.0)
        self.conf_filter.setSingleStep(0.05)
        self.conf_filter.setValue(1.0)
        self.conf_filter.setPrefix("confidence < ")
        self.errors_only = QCheckBox("errors only")
        for w in (self.class_filter, self.conf_filter, self.errors_only):
            sig = getattr(w, "currentIndexChanged", None) or getattr(w, "valueChanged", None) or w.toggled
            sig.connect(self.apply_filter)

        self.model = ResultsModel(self.thumbs)
        self.proxy = ResultsFilter()
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.verticalHeader().setDefaultSectionSize(52)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)  # the error reason gets the room left
        self.table.setSelectionBehavior(QTableView.SelectRows)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideLeft)  # keep the file name, shorten the folders
        self.model.modelReset.connect(self._size_columns)
        self.micrograph_panel = MicrographPanel()
        self.micrograph_panel.particle_clicked.connect(self.select_particle)
        self.table.selectionModel().currentRowChanged.connect(self._row_selected)
        self.table.doubleClicked.connect(
            lambda index: self.review_requested.emit(self.model.rows[self.proxy.mapToSource(index).row()]))
        self.table.setToolTip("Double-click a row to review that particle")
        self.chart = CompositionChart(4, 3)
        self.composition = QLabel("")
        self.composition.setTextFormat(Qt.RichText)

        top = QFormLayout()
        row1 = QHBoxLayout()
        row1.addWidget(self.folder)
        row1.addWidget(browse_folder)
        row2 = QHBoxLayout()
        row2.addWidget(self.model_path)
        row2.addWidget(browse_model)
        row2.addWidget(default_btn)
        top.addRow("Images:", row1)
        top.addRow("Files are:", self.input_kind)
        top.addRow("Particle finder:", self.finder_row)
        self.finder_label = top.labelForField(self.finder_row)
        top.addRow("Model:", row2)
        buttons = QHBoxLayout()
        for w in (self.run_btn, self.cancel_btn, self.export_btn, self.open_btn):
            buttons.addWidget(w)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.progress_label)
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Show:"))
        filters.addWidget(self.class_filter)
        filters.addWidget(self.conf_filter)
        filters.addWidget(self.errors_only)
        filters.addStretch(1)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addLayout(filters)
        lv.addWidget(self.table)
        composition = self.composition_box = QGroupBox("Composition")  # untitled when its tab shows
        rv = QVBoxLayout(composition)
        rv.addWidget(self.chart)
        rv.addWidget(self.composition)
        # Micrograph runs add a page with the selected particle's micrograph (tab bar shown only then).
        right = self.right_pages = QTabWidget()
        right.addTab(composition, "Composition")
        right.addTab(self.micrograph_panel, "Micrograph")
        right.setTabVisible(1, False)
        right.tabBar().setVisible(False)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.card)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(split, 1)

        QShortcut(QKeySequence("Ctrl+R"), self, self.run)
        QShortcut(QKeySequence(Qt.Key_Escape), self, self.cancel)
        QShortcut(QKeySequence("Ctrl+E"), self, self.export_dialog)
        self.model_path.editingFinished.connect(lambda: self.set_model(self.model_path.text()))
        self.set_model(self.model_path.text())
        kind = self.input_kind.findData(settings.value("classify/input_kind", "particles"))
        self.input_kind.setCurrentIndex(max(0, kind))
        self._input_kind_changed()

    def _size_columns(self) -> None:
        """Thumbnail and file columns fixed; every other column at least as wide as its header text."""
        header = self.table.horizontalHeader()
        metrics = header.fontMetrics()
        header.resizeSection(0, 60)
        header.resizeSection(1, 300)
        for col, text in enumerate(self.model.headers()[2:], start=2):
            header.resizeSection(col, max(95, metrics.horizontalAdvance(text) + 28))  # + sort arrow and margins

    # ------------------------------------------------------------------ inputs
    @property
    def micrographs(self) -> bool:
        return self.input_kind.currentData() == "micrographs"

    def _input_kind_changed(self, *_) -> None:
        self.finder_row.setVisible(self.micrographs)
        if self.finder_label is not None:
            self.finder_label.setVisible(self.micrographs)
        self.finder_model.setVisible(self.finder_name.currentData() == "learned")
        self.folder.setPlaceholderText("folder of whole micrographs (searched recursively)" if self.micrographs
                                       else "folder of particle images (searched recursively)")

    def _show_inputs_of(self, run: BatchRun) -> None:
        """The input kind and finder of an opened record, so that Run classifies as it did."""
        self.input_kind.setCurrentIndex(self.input_kind.findData("micrographs" if run.micrographs else "particles"))
        finding = run.finding or {}
        if finding.get("finder") in FINDER_NAMES:
            self.finder_name.setCurrentIndex(self.finder_name.findData(finding["finder"]))
            if finding.get("model"):
                self.finder_model.setText(str(finding["model"]))
            self.polarity.setCurrentIndex(max(0, self.polarity.findData(finding.get("polarity"))))

    def pick_finder_model(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Particle-finder model", str(Path(self.finder_model.text()).parent),
                                           "emclassify finder models (*.safetensors);;All files (*)")
        if f:
            self.finder_model.setText(f)

    def make_finder(self):
        """The finder chosen in the window (core :func:`make_finder`); ValueError/ModelFileError say why not."""
        name = self.finder_name.currentData()
        return make_finder(name, model=self.finder_model.text().strip() or None if name == "learned" else None,
                           polarity=self.polarity.currentData())

    def pick_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Folder of particle images", self.folder.text())
        if d:
            self.folder.setText(d)

    def pick_model(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Model file", str(Path(self.model_path.text()).parent),
                                           "emclassify models (*.safetensors);;All files (*)")
        if f:
            self.set_model(f)

    def set_model(self, path: str) -> bool:
        self.model_path.setText(path)
        try:
            trained = load_model(path)
        except ModelFileError as exc:
            self.card.setHtml(f"<span style='color:#b03a2e'>{exc}</span>")
            return False
        self.card.setHtml(describe_card(trained))
        return True

    # ------------------------------------------------------------------ running
    def running(self) -> bool:
        return self.job is not None and self.job.is_running()

    def run(self) -> None:
        if self.running():
            return
        folder, model = self.folder.text().strip(), self.model_path.text().strip()
        self.message.setText("")
        if not folder or not Path(folder).is_dir():
            self.show_error(f"{folder or 'no folder chosen'}: not a folder. Choose the folder of particle images.")
            return
        if not self.set_model(model):
            self.show_error(self.card.toPlainText())
            return
        finder = None
        if self.micrographs:
            try:
                finder = self.make_finder()
            except (ValueError, ModelFileError) as exc:
                self.show_error(str(exc))
                return
            self.settings.setValue("classify/finder_model", self.finder_model.text().strip())
            self.settings.setValue("classify/polarity", self.polarity.currentData() or "")
        self.settings.setValue("classify/input_kind", self.input_kind.currentData())
        self.settings.setValue("classify/folder", folder)
        self.settings.setValue("classify/model", model)
        self.summary = None
        self.unsaved = False
        self.export_btn.setEnabled(False)
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setValue(0)
        self.progress_label.setText("starting…")
        self.job = Job(classify_job, folder, model, finder=finder)
        self.job.progress.connect(self.on_progress)
        self.job.done.connect(self.on_done)
        self.job.failed.connect(self.on_failed)
        self.job.start()
        self.status.emit(f"classifying {folder}")

    def cancel(self) -> None:
        if self.running():
            self.job.cancel.cancel()
            self.progress_label.setText("cancelling…")

    @property
    def trained(self):
        """The model of the run shown, or None."""
        return self.run_record.trained if self.run_record is not None else None

    def _show_run(self, run: BatchRun) -> None:
        """Empty the table for ``run``'s classes (its rows arrive batch by batch, or all at once)."""
        self.run_record = run
        self.model.reset(run.classes, run.root)
        self.right_pages.setTabVisible(1, run.micrographs)
        self.right_pages.tabBar().setVisible(run.micrographs)
        self.composition_box.setTitle("" if run.micrographs else "Composition")
        if run.micrographs:
            self.micrograph_panel.set_run(run, run.classes)
        else:
            self.right_pages.setCurrentIndex(0)
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItem("all classes", "")
        for c in run.classes:
            self.class_filter.addItem(c, c)
        self.class_filter.blockSignals(False)

    def on_progress(self, event) -> None:
        if isinstance(event, BatchStarted):
            self._show_run(event.run)
            self.progress.setMaximum(max(event.total, 1))
        elif isinstance(event, BatchClassified):
            batch = event.batch
            self.model.add(batch.results)
            self.progress.setMaximum(max(batch.total, 1))
            self.progress.setValue(batch.done)
            eta = "--" if batch.eta is None else f"{batch.eta:.0f} s"
            self.progress_label.setText(f"{batch.done}/{batch.total} files · {batch.rate:.1f} img/s · ETA {eta}")
            self.results_changed.emit()

    def on_done(self, run: BatchRun) -> None:
        self.run_record = run
        self.summary = run.summary()
        self.unsaved = bool(run.results)
        self.show_composition()
        done = len(self.model.rows)
        errors = self.summary["files"]["error"]
        state = "finished" if run.complete else "cancelled"
        if run.micrographs:
            micrographs = len({r.path for r in self.model.rows})
            done_text = f"{sum(r.particle is not None for r in self.model.rows)} particles in {micrographs} micrographs"
        else:
            done_text = f"{done} files"
        self.progress_label.setText(f"{state}: {done_text}" + (f", {errors} in error" if errors else ""))
        self._show_notes()
        self._idle()
        self.status.emit(f"{state}: {done_text} classified")
        self.finished.emit()

    def _show_notes(self) -> None:
        notes = []
        errors = self.summary["files"]["error"]
        if errors:
            first = self.summary["errors"][0]
            notes.append(f"{errors} file(s) could not be classified, e.g. {first['path']}: {first['error']}. "
                         "Tick 'errors only' to see them all.")
        notes.extend(f"{w}." for w in run_warnings(self.summary))
        doubt = doubt_headline(self.summary)
        if doubt:
            first = flagged_micrographs(self.summary)[0]
            notes.append(f"{doubt}; e.g. {first['micrograph']}: {first['warnings'][0]}")
        if notes:
            self.message.setText(" ".join(notes))

    def open_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Open results (CSV lab record)",
                                           self.settings.value("classify/export_dir", str(Path.home())), "CSV (*.csv)")
        if f:
            self.open_results(f)

    def open_results(self, csv_path, model=None) -> bool:
        """Show a finished record (CSV + summary, e.g. of a headless ``emclassify batch``) for filtering and review."""
        if self.running():
            return False
        self.message.setText("")
        try:
            run = BatchRun.from_csv(csv_path, model=model)
        except BatchError as exc:
            self.show_error(str(exc))
            return False
        self._show_run(run)
        self.model.add(run.results)
        self.folder.setText(str(run.root))
        self.set_model(str(run.trained.path))
        self._show_inputs_of(run)
        self.summary = run.summary(csv_path)
        self.unsaved = False
        self.show_composition()
        self.progress_label.setText(f"opened {Path(csv_path).name}: {len(run.results)} files")
        self._show_notes()
        self._idle()
        self.results_changed.emit()
        self.status.emit(f"opened {csv_path}")
        return True

    def _row_selected(self, current, _previous=None) -> None:
        if not current.isValid() or self.run_record is None or not self.run_record.micrographs:
            return
        self.right_pages.setCurrentWidget(self.micrograph_panel)
        r = self.model.rows[self.proxy.mapToSource(current).row()]
        rows = [x for x in self.model.rows if x.path == r.path]
        self.micrograph_panel.show_particle(r.path, rows, r.particle.index if r.particle else None)

    def select_particle(self, relpath: str, index: int) -> None:
        """Select (and scroll to) the row of particle ``index`` of ``relpath`` (a click in the micrograph)."""
        row = self.model.find(relpath, index)
        if row is None:
            return
        if self.errors_only.isChecked() or self.class_filter.currentIndex() or self.conf_filter.value() < 1.0:
            self.class_filter.setCurrentIndex(0)  # a filter could hide the clicked particle's row
            self.conf_filter.setValue(1.0)
            self.errors_only.setChecked(False)
        proxy_index = self.proxy.mapFromSource(self.model.index(row, 1))
        self.table.setCurrentIndex(proxy_index)
        self.table.scrollTo(proxy_index)

    def on_failed(self, message: str) -> None:
        self.show_error(message)
        self._idle()
        self.finished.emit()

    def _idle(self) -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.export_btn.setEnabled(bool(self.model.rows))

    def show_error(self, message: str) -> None:
        self.message.setText(message)
        self.error.emit(message)

    def apply_filter(self, *_):
        self.proxy.set_filter(self.class_filter.currentData() or "", self.conf_filter.value(),
                              self.errors_only.isChecked())

    def show_composition(self) -> None:
        s = self.summary
        unit = "particles" if self.run_record is not None and self.run_record.micrographs else "files"
        self.chart.show_summary(s, unit)
        adj = s.get("adjusted", {}).get("classes")
        rows = [f"<table cellspacing=4><tr><th align=left>class</th><th>{unit}</th><th>%</th>"
                + ("<th>adjusted %<br>[95 % interval]</th>" if adj else "") + "</tr>"]
        for c, n in s["counts"].items():
            cell = ""
            if adj and adj[c]["percent"] is not None:
                a = adj[c]
                cell = f"<td>{a['percent']:.1f} [{a['ci95'][0]:.1f}, {a['ci95'][1]:.1f}]</td>"
            rows.append(f"<tr><td>{c}</td><td align=right>{n}</td><td align=right>{s['percentages'][c]:.1f}</td>{cell}</tr>")
        rows.append("</table>")
        self.composition.setText("".join(rows))

    # ------------------------------------------------------------------ export
    def export_dialog(self) -> None:
        if self.run_record is None or not self.run_record.results:
            return
        start = str(Path(self.settings.value("classify/export_dir", str(Path.home()))) /
                    f"{Path(self.folder.text()).name}.emclassify.csv")
        f, _ = QFileDialog.getSaveFileName(self, "Export CSV lab record", start, "CSV (*.csv)")
        if f:
            self.export(f)

    def export(self, path) -> Path:
        """Write the CSV and its summary (the same format as ``emclassify batch``, by the same code)."""
        path, summary_path, self.summary = self.run_record.save(path)
        self.unsaved = False
        self.settings.setValue("classify/export_dir", str(path.parent))
        self.status.emit(f"wrote {path} and {summary_path.name}")
        return path
