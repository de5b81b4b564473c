"""Classify a folder: pick folder and model, run with progress and cancel, browse/filter results, export."""
from __future__ import annotations

import html

import time
from pathlib import Path
from typing import List, Optional

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton, QSplitter,
                               QTableView, QTextBrowser, QVBoxLayout, QWidget)

from emclassify.assets import default_model_path
from emclassify.batch import build_summary
from emclassify.inference import DEFAULT_BATCH_SIZE, Classifier, FileResult, classify_folder
from emclassify.io import list_images
from emclassify.modelfile import ModelFileError, load_model
from emclassify.reports import summary_path_for, write_csv, write_json

from .charts import CompositionChart
from .imaging import ThumbnailCache
from .widgets import error_label
from .workers import Job

SORT_ROLE = Qt.UserRole + 1


def classify_job(report, cancel, folder: str, model_path: str, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE):
    """Worker body: load the model, list the folder, classify batch by batch (reported as they finish)."""
    trained = load_model(model_path)
    classifier = Classifier(trained, device=device)
    listing = list_images(folder)
    if not listing.samples:
        raise ValueError(f"{folder}: no image files found (.tif .tiff .png .jpg .jpeg .bmp)")
    report(("start", len(listing.samples), trained))
    t0 = time.perf_counter()
    for batch in classify_folder(folder, classifier, batch_size=batch_size, cancel=cancel, listing=listing):
        report(("batch", batch))
    return {"trained": trained, "listing": listing, "device": str(classifier.device),
            "elapsed": time.perf_counter() - t0, "complete": not cancel.cancelled}


def describe_card(trained) -> str:
    c = trained.card
    p = c.preprocess
    lines = [f"<b>{c.name or Path(trained.path).name}</b>", f"architecture: {c.arch}",
             f"classes: {', '.join(c.classes)}",
             f"input: {p.mode}, {p.size}×{p.size} px, {p.normalize} normalisation"]
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
            if role == Qt.DecorationRole and self.root is not None:
                return self.thumbs.get(self.root / r.path)
            if role == SORT_ROLE:
                return r.path
            return None
        if col == 1:
            value = r.path
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

    def __init__(self, settings):
        super().__init__()
        self.settings = settings
        self.job: Optional[Job] = None
        self.trained = None
        self.summary: Optional[dict] = None
        self.listing = None
        self.thumbs = ThumbnailCache()

        self.folder = QLineEdit(settings.value("classify/folder", ""))
        self.folder.setPlaceholderText("folder of particle images (searched recursively)")
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
        self.table.setSelectionBehavior(QTableView.SelectRows)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideLeft)  # keep the file name, shorten the folders
        self.model.modelReset.connect(self._size_columns)
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
        top.addRow("Model:", row2)
        buttons = QHBoxLayout()
        for w in (self.run_btn, self.cancel_btn, self.export_btn):
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
        right = QGroupBox("Composition")
        rv = QVBoxLayout(right)
        rv.addWidget(self.chart)
        rv.addWidget(self.composition)
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

    def _size_columns(self) -> None:
        header = self.table.horizontalHeader()
        header.resizeSection(0, 60)
        header.resizeSection(1, 300)
        for col in range(2, self.model.columnCount()):
            header.resizeSection(col, 95)

    # ------------------------------------------------------------------ inputs
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
        self.settings.setValue("classify/folder", folder)
        self.settings.setValue("classify/model", model)
        self.summary = None
        self.export_btn.setEnabled(False)
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setValue(0)
        self.progress_label.setText("starting…")
        self.job = Job(classify_job, folder, model)
        self.job.progress.connect(self.on_progress)
        self.job.done.connect(self.on_done)
        self.job.failed.connect(self.on_failed)
        self.job.start(self)
        self.status.emit(f"classifying {folder}")

    def cancel(self) -> None:
        if self.running():
            self.job.cancel.cancel()
            self.progress_label.setText("cancelling…")

    def on_progress(self, event) -> None:
        kind = event[0]
        if kind == "start":
            _, total, trained = event
            self.trained = trained
            self.model.reset(trained.card.classes, Path(self.folder.text()).resolve())
            self.class_filter.blockSignals(True)
            self.class_filter.clear()
            self.class_filter.addItem("all classes", "")
            for c in trained.card.classes:
                self.class_filter.addItem(c, c)
            self.class_filter.blockSignals(False)
            self.progress.setMaximum(max(total, 1))
            return
        batch = event[1]
        self.model.add(batch.results)
        self.progress.setMaximum(max(batch.total, 1))
        self.progress.setValue(batch.done)
        eta = "--" if batch.eta is None else f"{batch.eta:.0f} s"
        self.progress_label.setText(f"{batch.done}/{batch.total} files · {batch.rate:.1f} img/s · ETA {eta}")
        self.results_changed.emit()

    def on_done(self, info) -> None:
        self.listing = info["listing"]
        self.summary = build_summary(folder=self.listing.root, csv_path=Path("unsaved.csv"), trained=info["trained"],
                                     device=info["device"], results=self.model.rows, ignored=self.listing.ignored,
                                     complete=info["complete"], elapsed=info["elapsed"], resumed=0)
        self.show_composition()
        done = len(self.model.rows)
        errors = self.summary["files"]["error"]
        state = "finished" if info["complete"] else "cancelled"
        self.progress_label.setText(f"{state}: {done} files" + (f", {errors} in error" if errors else ""))
        notes = []
        if errors:
            first = self.summary["errors"][0]
            notes.append(f"{errors} file(s) could not be classified, e.g. {first['path']}: {first['error']}. "
                         "Tick 'errors only' to see them all.")
        if self.summary.get("size_warnings"):
            notes.append(f"{self.summary['size_warnings']} image(s) are far larger or smaller than the images this "
                         "model was trained on (whole micrographs?): their predictions are unreliable.")
        if notes:
            self.message.setText(" ".join(notes))
        self._idle()
        self.status.emit(f"{state}: {done} files classified")
        self.finished.emit()

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
        self.chart.show_summary(s)
        adj = s.get("adjusted", {}).get("classes")
        rows = ["<table cellspacing=4><tr><th align=left>class</th><th>files</th><th>%</th>"
                + ("<th>adjusted % [95 % interval]</th>" if adj else "") + "</tr>"]
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
        if not self.model.rows:
            return
        start = str(Path(self.settings.value("classify/export_dir", str(Path.home()))) /
                    f"{Path(self.folder.text()).name}.emclassify.csv")
        f, _ = QFileDialog.getSaveFileName(self, "Export CSV lab record", start, "CSV (*.csv)")
        if f:
            self.export(f)

    def export(self, path) -> Path:
        """Write the CSV and its summary (the same format as ``emclassify batch``)."""
        path = Path(path)
        write_csv(path, self.model.rows, self.model.classes)
        summary = dict(self.summary or {})
        summary["csv"] = path.name
        write_json(summary_path_for(path), summary)
        self.settings.setValue("classify/export_dir", str(path.parent))
        self.status.emit(f"wrote {path} and {summary_path_for(path).name}")
        return path
