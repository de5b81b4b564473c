"""Train a model, and cross-validate or compare models, from labelled data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QSpinBox,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from emclassify.cv_report import write_compare_report, write_cv_report
from emclassify.evaluation import Comparison, compare, cross_validate
from emclassify.events import Decoding, EpochEnded, FoldEnded, format_seconds
from emclassify.io import load_dataset
from emclassify.models import list_archs
from emclassify.guardrails import format_flags
from emclassify.input_decision import AUTO, DEFAULT_MODE, DEFAULT_SIZE, decide_preprocess, describe
from emclassify.preprocess import MODES
from emclassify.training import BALANCE_STRATEGIES, TrainConfig, train

from .charts import ConfusionChart, CurvesChart
from .widgets import error_label
from .workers import Job


@dataclass(frozen=True)
class DataReady:
    """The view's own event: the dataset is listed and its input settings decided."""

    dataset: object
    preprocess: object
    decision: dict


def _dataset_and_input(report, dataset_path: str, input_request: dict):
    """Load the dataset and decide its input settings (``auto`` mode) exactly as the CLI does."""
    ds = load_dataset(dataset_path)
    pcfg, decision = decide_preprocess(ds.samples, **input_request)
    report(DataReady(ds, pcfg, decision))
    return ds, pcfg, decision


def train_job(report, cancel, dataset_path: str, input_request: dict, cfg: TrainConfig, out: str):
    ds, pcfg, decision = _dataset_and_input(report, dataset_path, input_request)
    return train(ds, pcfg, cfg, out, progress=report, cancel=cancel, input_decision=decision)


def cv_job(report, cancel, dataset_path: str, input_request: dict, cfg: TrainConfig, archs, folds: int):
    ds, pcfg, decision = _dataset_and_input(report, dataset_path, input_request)
    if len(archs) == 1:
        cfg = TrainConfig(**{**cfg.to_dict(), "arch": archs[0]})
        result = cross_validate(ds, pcfg, cfg, k=folds, cancel=cancel, progress=report)
        results = [result]
    else:
        result = compare(ds, archs, pcfg, cfg, k=folds, cancel=cancel, progress=report)
        results = result.results
    for r in results:
        r.settings["input_decision"] = decision
    return result


class SettingsForm(QGroupBox):
    """The input and training settings shared by the Train and Cross-validate views."""

    def __init__(self, title: str, with_arch: bool):
        super().__init__(title)
        d = TrainConfig()
        self.arch = QComboBox()
        self.arch.addItems(list_archs())
        self.arch.setCurrentText(d.arch)
        self.mode = QComboBox()
        self.mode.addItems((AUTO,) + MODES)
        self.mode.setCurrentText(DEFAULT_MODE)
        self.mode.setToolTip("auto: crop when masks exist, else decided from the image sizes")
        self.size = _auto_spinbox(DEFAULT_SIZE, "auto (from the particles)", smallest=16, largest=256)
        self.balance = QComboBox()
        self.balance.addItems(BALANCE_STRATEGIES)
        self.balance.setCurrentText(d.balance)
        # 0 shows as "every particle"; else per epoch the largest class is drawn at most this many times
        # all the others together (TrainConfig.majority_ratio)
        self.majority_ratio = QDoubleSpinBox(decimals=1, singleStep=0.5, minimum=0.0, maximum=1000.0,
                                             value=d.majority_ratio)
        self.majority_ratio.setSpecialValueText("every particle")
        self.majority_ratio.setToolTip("per epoch, a class larger than this many times all the others together is "
                                       "drawn only that many times them (a fresh subset each epoch); large, "
                                       "imbalanced sets train faster. Values between 0 and 1 count as 1.")
        self.augment = QCheckBox("augmentation")
        self.augment.setChecked(d.augment)
        # 0 shows as "auto": chosen from the training-set size (emclassify.defaults.EPOCH_BUDGET)
        self.epochs = _auto_spinbox(d.epochs, "auto (from the data)")
        self.patience = _auto_spinbox(d.patience, "auto (a third of the epochs)")
        self.lr = QDoubleSpinBox(decimals=5, singleStep=0.0005, minimum=1e-5, maximum=1.0, value=d.lr)
        self.weight_decay = QDoubleSpinBox(decimals=5, singleStep=1e-4, minimum=0.0, maximum=1.0,
                                           value=d.weight_decay)
        self.label_smoothing = QDoubleSpinBox(decimals=3, singleStep=0.01, minimum=0.0, maximum=0.5,
                                              value=d.label_smoothing)
        self.dropout = QDoubleSpinBox(decimals=2, singleStep=0.05, minimum=-0.01, maximum=0.9, value=-0.01)
        self.dropout.setSpecialValueText("architecture default")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        grid = QGridLayout(self)
        fields = ([("architecture", self.arch)] if with_arch else []) + [
            ("input mode", self.mode), ("input size (px)", self.size), ("balance", self.balance),
            ("epochs (max)", self.epochs), ("early-stopping patience", self.patience), ("learning rate", self.lr),
            ("weight decay", self.weight_decay), ("label smoothing", self.label_smoothing),
            ("dropout", self.dropout), ("largest class per epoch (x others)", self.majority_ratio),
            ("seed", self.seed)]
        for i, (name, w) in enumerate(fields):
            grid.addWidget(QLabel(name), i // 2, 2 * (i % 2))
            grid.addWidget(w, i // 2, 2 * (i % 2) + 1)
        grid.addWidget(self.augment, (len(fields) + 1) // 2, 0, 1, 2)

    def configs(self, arch: Optional[str] = None):
        """``(input request for decide_preprocess, TrainConfig)``."""
        request = {"mode": self.mode.currentText(), "size": _auto_value(self.size)}
        cfg = TrainConfig(arch=arch or self.arch.currentText(), epochs=_auto_value(self.epochs), lr=self.lr.value(),
                          weight_decay=self.weight_decay.value(), label_smoothing=self.label_smoothing.value(),
                          dropout=None if self.dropout.value() < 0 else self.dropout.value(),
                          patience=_auto_value(self.patience), augment=self.augment.isChecked(),
                          balance=self.balance.currentText(), majority_ratio=_majority_ratio(self.majority_ratio),
                          seed=self.seed.value())
        return request, cfg


def _majority_ratio(box: QDoubleSpinBox) -> float:
    """The box's ratio for TrainConfig: 0 (every particle) or at least 1."""
    return 0.0 if box.value() == 0 else max(1.0, box.value())


def _auto_spinbox(default, auto_text: str, smallest: int = 1, largest: int = 1000) -> QSpinBox:
    """A whole-number box for ``smallest``..``largest`` whose value just below ``smallest`` shows
    ``auto_text`` and means ``auto`` (Qt shows the special text at the minimum)."""
    box = QSpinBox()
    box.setRange(smallest - 1, largest)
    box.setSpecialValueText(auto_text)
    box.setValue(box.minimum() if default == AUTO else int(default))
    return box


def _auto_value(box: QSpinBox):
    return AUTO if box.value() == box.minimum() else box.value()


def _dataset_row(parent, settings, key: str):
    edit = QLineEdit(settings.value(key, ""))
    edit.setPlaceholderText("labelled folder (one sub-folder per class, or manifest.csv) or manifest CSV")
    btn = QPushButton("Dataset…")

    def pick():
        d = QFileDialog.getExistingDirectory(parent, "Labelled dataset folder", edit.text())
        if d:
            edit.setText(d)

    btn.clicked.connect(pick)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(btn)
    return edit, row


class TrainTab(QWidget):
    status = Signal(str)
    error = Signal(str)
    model_saved = Signal(str)
    finished = Signal()

    def __init__(self, settings):
        super().__init__()
        self.settings = settings
        self.job: Optional[Job] = None
        self.history = []
        self.dataset, ds_row = _dataset_row(self, settings, "train/dataset")
        self.out = QLineEdit(settings.value("train/out", str(Path.home() / "emclassify-model.safetensors")))
        save_as = QPushButton("Save as…")
        save_as.clicked.connect(self.pick_out)
        self.form = SettingsForm("Model and training", with_arch=True)
        self.start_btn = QPushButton("Train  (Ctrl+T)")
        self.start_btn.clicked.connect(self.start)
        self.stop_btn = QPushButton("Stop (keep best so far)")
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(self.stop)
        self.curves = CurvesChart(8, 3)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(140)
        self.message = error_label()
        top = QFormLayout()
        top.addRow("Training data:", ds_row)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(save_as)
        top.addRow("Model file:", out_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.stop_btn)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(self.curves, 1)
        layout.addWidget(self.log)
        QShortcut(QKeySequence("Ctrl+T"), self, self.start)

    def train_on(self, dataset: str) -> None:
        """Start training on ``dataset`` at once (e.g. the labels folder of a review), the model saved
        beside it as ``<folder name>.safetensors`` unless a training is already running."""
        if self.job is not None and self.job.is_running():
            self.message.setText("A training is already running; stop it first.")
            return
        folder = Path(dataset)
        self.dataset.setText(str(folder))
        self.out.setText(str(folder.parent / f"{folder.name}.safetensors"))
        self.start()

    def pick_out(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self, "Model file", self.out.text(), "emclassify models (*.safetensors)")
        if f:
            self.out.setText(f)

    def start(self) -> None:
        if self.job is not None and self.job.is_running():
            return
        self.message.setText("")
        try:
            pcfg, cfg = self.form.configs()
        except ValueError as exc:
            self.message.setText(str(exc))
            return
        ds, out = self.dataset.text().strip(), self.out.text().strip()
        if not ds or not out:
            self.message.setText("Choose the training data and where to save the model.")
            return
        self.settings.setValue("train/dataset", ds)
        self.settings.setValue("train/out", out)
        self.history = []
        self.curves.clear()
        self.log.clear()
        self.start_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.job = Job(train_job, ds, pcfg, cfg, out)
        self.job.progress.connect(self.on_progress)
        self.job.done.connect(self.on_done)
        self.job.failed.connect(self.on_failed)
        self.job.start()
        self.status.emit(f"training {cfg.arch} on {ds}")

    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel.cancel()
            self.log.appendPlainText("stopping after this epoch; the best model so far will be saved")

    def on_progress(self, event) -> None:
        if isinstance(event, DataReady):
            ds, pcfg, decision = event.dataset, event.preprocess, event.decision
            counts = ", ".join(f"{c} {n}" for c, n in ds.class_counts().items())
            self.log.appendPlainText(f"{len(ds)} images: {counts}")
            for w in ds.warnings:
                self.log.appendPlainText(f"note: {w}")
            self.log.appendPlainText(describe(pcfg, decision))
            if decision.get("note"):
                self.log.appendPlainText(f"note: {decision['note']}")
        elif isinstance(event, Decoding):
            self.status.emit(f"decoding images {event.done}/{event.total}")
        elif isinstance(event, EpochEnded):
            log = event.log
            self.history.append(log)
            self.curves.show_history(self.history)
            self.log.appendPlainText(f"epoch {log.epoch}/{log.epochs}: loss {log.train_loss:.4f}, "
                                     f"validation macro-F1 {log.val_macro_f1:.4f} ({log.seconds:.1f} s; "
                                     f"at most {format_seconds(event.remaining_s)} left)")
            self.status.emit(f"training: epoch {log.epoch}/{log.epochs}, at most {format_seconds(event.remaining_s)} "
                             "left (early stopping may end sooner)")

    def on_done(self, outcome) -> None:
        v = outcome.validation
        self.curves.show_history(outcome.fit.history, outcome.fit.best_epoch)
        self.log.appendPlainText(f"kept epoch {outcome.fit.best_epoch} ({outcome.fit.stopped}); validation accuracy "
                                 f"{100 * v['accuracy']:.1f} %, macro-F1 {v['macro_f1']:.3f}; saved {outcome.path}")
        for name, b in outcome.card.metrics.get("baselines", {}).items():
            self.log.appendPlainText(f"baseline {name}: accuracy {100 * b['accuracy']:.1f} %, macro-F1 {b['macro_f1']:.3f}")
        if outcome.card.training.get("epoch_decision"):
            self.log.appendPlainText(f"epochs: {outcome.card.training['epoch_decision']}")
        sel = outcome.card.metrics.get("selection")
        if sel:
            self.log.appendPlainText(f"auto kept {sel['kept']} ({sel['rule']})")
        for e in outcome.skipped[:20]:
            self.log.appendPlainText(f"skipped {e}")
        if outcome.flags:
            self.log.appendPlainText(format_flags(outcome.flags))
            self.message.setText("<br>".join(f"⚠ {f['message']}" for f in outcome.flags))
        self.start_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        self.model_saved.emit(str(outcome.path))
        self.status.emit(f"saved {outcome.path}")
        self.finished.emit()

    def on_failed(self, message: str) -> None:
        self.message.setText(message)
        self.error.emit(message)
        self.start_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        self.finished.emit()


class CVTab(QWidget):
    status = Signal(str)
    error = Signal(str)
    finished = Signal()

    def __init__(self, settings):
        super().__init__()
        self.settings = settings
        self.job: Optional[Job] = None
        self.result = None
        self.dataset, ds_row = _dataset_row(self, settings, "cv/dataset")
        self.folds = QSpinBox()
        self.folds.setRange(2, 20)
        self.folds.setValue(5)
        self.arch_boxes = {}
        arch_row = QHBoxLayout()
        for a in list_archs():
            cb = QCheckBox(a)
            cb.setChecked(a == TrainConfig().arch)  # the default model; its baselines are reported beside it
            self.arch_boxes[a] = cb
        arch_grid = QGridLayout()
        for i, cb in enumerate(self.arch_boxes.values()):
            arch_grid.addWidget(cb, i // 5, i % 5)
        arch_row.addLayout(arch_grid)
        self.form = SettingsForm("Input and training (for every model)", with_arch=False)
        self.run_btn = QPushButton("Run  (Ctrl+R)")
        self.run_btn.clicked.connect(self.run)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(lambda: self.job and self.job.cancel.cancel())
        self.export_btn = QPushButton("Export report…  (Ctrl+E)")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(self.export_dialog)
        self.progress = QLabel("")
        self.show_arch = QComboBox()
        self.show_arch.currentIndexChanged.connect(self.show_selected)
        self.confusion = ConfusionChart(4.5, 3.6)
        self.table = QTableWidget()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.RichText)
        self.message = error_label()

        top = QFormLayout()
        top.addRow("Labelled data:", ds_row)
        top.addRow("Folds:", self.folds)
        top.addRow("Models (one: CV; several: compare):", arch_row)
        buttons = QHBoxLayout()
        for w in (self.run_btn, self.stop_btn, self.export_btn):
            buttons.addWidget(w)
        buttons.addWidget(self.progress, 1)
        results = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(self.show_arch)
        left.addWidget(self.confusion, 1)
        results.addLayout(left, 1)
        right = QVBoxLayout()
        right.addWidget(self.table, 1)
        right.addWidget(self.verdict)
        results.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addLayout(results, 1)
        QShortcut(QKeySequence("Ctrl+R"), self, self.run)
        QShortcut(QKeySequence("Ctrl+E"), self, self.export_dialog)

    def selected_archs(self):
        return [a for a, cb in self.arch_boxes.items() if cb.isChecked()]

    def run(self) -> None:
        if self.job is not None and self.job.is_running():
            return
        self.message.setText("")
        archs = self.selected_archs()
        ds = self.dataset.text().strip()
        if not archs or not ds:
            self.message.setText("Choose the labelled data and at least one model.")
            return
        try:
            pcfg, cfg = self.form.configs(arch=archs[0])
        except ValueError as exc:
            self.message.setText(str(exc))
            return
        self.settings.setValue("cv/dataset", ds)
        self.result = None
        self.export_btn.setEnabled(False)
        self.run_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.job = Job(cv_job, ds, pcfg, cfg, archs, self.folds.value())
        self.job.progress.connect(self.on_progress)
        self.job.done.connect(self.on_done)
        self.job.failed.connect(self.on_failed)
        self.job.start()

    def on_progress(self, event) -> None:
        if isinstance(event, DataReady):
            self.progress.setText(f"{len(event.dataset)} images; input {event.preprocess.mode}, "
                                  f"{event.preprocess.size}×{event.preprocess.size} px")
        elif isinstance(event, Decoding):
            self.progress.setText(f"decoding {event.done}/{event.total}")
        elif isinstance(event, EpochEnded):
            log = event.log
            self.progress.setText(f"{event.arch}: fold {event.fold + 1}/{event.folds}, epoch {log.epoch}/{log.epochs}, "
                                  f"validation macro-F1 {log.val_macro_f1:.3f} · at most "
                                  f"{format_seconds(event.remaining_s)} left")
        elif isinstance(event, FoldEnded):
            self.progress.setText(f"{event.arch}: fold {event.fold + 1}/{event.folds} done, "
                                  f"test macro-F1 {event.metrics['macro_f1']:.3f}")

    def results(self):
        r = self.result
        return [] if r is None else (r.results if isinstance(r, Comparison) else [r])

    def on_done(self, result) -> None:
        self.result = result
        self.show_arch.blockSignals(True)
        self.show_arch.clear()
        self.show_arch.addItems([r.arch for r in self.results()])
        self.show_arch.blockSignals(False)
        self.show_selected()
        lines = []
        if isinstance(result, Comparison):
            lines += [f"<b>{t['a']} vs {t['b']}</b>: {t['verdict']}" for t in result.tests]
        first = self.results()[0].metrics_dict() if self.results() else {}
        decided = self.results()[0].settings["training"].get("epoch_decision") if self.results() else None
        if decided:
            lines.append(f"epochs: {decided}")
        for name, b in first.get("baselines", {}).items():
            lines.append(f"baseline {name}: accuracy {100 * b['accuracy']:.1f} %, macro-F1 {b['macro_f1']:.3f}")
        for r in self.results():
            lines += [f"<span style='color:#b00020'><b>⚠ {r.arch}: {f['message']}</b></span>" for f in r.flags()]
        self.verdict.setText("<br>".join(lines))
        self.progress.setText("finished" + ("" if all(r.complete for r in self.results()) else " (stopped early)"))
        self.run_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        self.export_btn.setEnabled(True)
        self.status.emit("cross-validation finished")
        self.finished.emit()

    def show_selected(self, *_):
        rs = self.results()
        if not rs:
            return
        r = rs[max(0, self.show_arch.currentIndex())]
        m = r.metrics_dict()
        self.confusion.show_matrix(m["confusion_matrix"], r.classes,
                                   f"{r.arch}: accuracy {100 * m['accuracy']:.1f} %, macro-F1 {m['macro_f1']:.3f}")
        cols = ["support", "TPR", "TNR", "PPV", "NPV", "F1"]
        self.table.setRowCount(len(r.classes))
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.setVerticalHeaderLabels(r.classes)
        for i, c in enumerate(r.classes):
            p = m["per_class"][c]
            for j, key in enumerate(["support", "tpr", "tnr", "ppv", "npv", "f1"]):
                v = p[key]
                self.table.setItem(i, j, QTableWidgetItem(str(v) if key == "support" else f"{v:.3f}"))

    def on_failed(self, message: str) -> None:
        self.message.setText(message)
        self.error.emit(message)
        self.run_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        self.finished.emit()

    def export_dialog(self) -> None:
        if self.result is None:
            return
        d = QFileDialog.getExistingDirectory(self, "Folder for the report", self.settings.value("cv/export", ""))
        if d:
            self.export(d)

    def export(self, folder) -> Path:
        if isinstance(self.result, Comparison):
            paths = write_compare_report(self.result, folder)
        else:
            paths = write_cv_report(self.result, folder)
        self.settings.setValue("cv/export", str(folder))
        self.status.emit(f"wrote {paths['report']}")
        return paths["report"]
