"""The main window: Classify, Review, Train and Cross-validate views, settings that persist."""
from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox, QTabWidget

from emclassify import __version__, backend_description

from .classify_tab import ClassifyTab
from .review_tab import ReviewTab
from .train_tab import CVTab, TrainTab
from .workers import Job


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self.settings = settings or QSettings("emclassify", "emclassify")
        self.setWindowTitle(f"emclassify {__version__}")
        self.classify = ClassifyTab(self.settings)
        self.review = ReviewTab(self.settings, self.classify)
        self.train = TrainTab(self.settings)
        self.cv = CVTab(self.settings)
        self.tabs = QTabWidget()
        for w, name in ((self.classify, "Classify"), (self.review, "Review"), (self.train, "Train"),
                        (self.cv, "Cross-validate / compare")):
            self.tabs.addTab(w, name)
            w.status.connect(self.show_status)
            w.error.connect(self.show_error)
        self.setCentralWidget(self.tabs)
        self.classify.finished.connect(self.review.refresh)
        self.train.model_saved.connect(self.classify.set_model)
        self.review.train_requested.connect(self._train_on_reviewed)
        self.classify.review_requested.connect(self._review_result)
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #b03a2e")
        self.statusBar().addPermanentWidget(self.error_label)
        self.statusBar().showMessage(f"ops backend: {backend_description()}")
        self._menus()
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1200, 820)
        self.tabs.setCurrentIndex(int(self.settings.value("window/tab", 0)))

    def _menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, slot, key in (("Open image folder…", self.classify.pick_folder, "Ctrl+O"),
                                ("Open model…", self.classify.pick_model, "Ctrl+M"),
                                ("Open results (CSV)…", self.classify.open_dialog, None),
                                ("Export CSV…", self.classify.export_dialog, None)):
            act = QAction(text, self)
            act.triggered.connect(slot)
            if key:
                act.setShortcut(QKeySequence(key))
            file_menu.addAction(act)
        file_menu.addSeparator()
        quit_act = QAction("Quit", self)
        quit_act.setShortcut(QKeySequence.Quit)
        quit_act.triggered.connect(self.close)
        file_menu.addAction(quit_act)
        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("About emclassify", self)
        about.triggered.connect(self.about)
        help_menu.addAction(about)

    def _review_result(self, result) -> None:
        if self.review.review(result) or (self.review.refresh() or self.review.review(result)):
            self.tabs.setCurrentWidget(self.review)
        else:
            self.statusBar().showMessage(f"{result.path}: not classified ({result.status}), nothing to review", 8000)

    def _train_on_reviewed(self, labels_folder: str) -> None:
        self.tabs.setCurrentWidget(self.train)
        self.train.train_on(labels_folder)

    def about(self) -> None:
        QMessageBox.about(self, "About emclassify",
                          f"emclassify {__version__}\nClassify TEM particle images with auditable CSV records.\n"
                          f"ops backend: {backend_description()}")

    def show_status(self, text: str) -> None:
        self.error_label.setText("")
        self.statusBar().showMessage(text, 15000)

    def show_error(self, text: str) -> None:
        self.error_label.setText(text if len(text) < 160 else text[:157] + "…")
        self.error_label.setToolTip(text)

    def confirm_discard(self) -> bool:
        """Ask before results classified here and never exported are lost; True to go on."""
        if not self.classify.unsaved:
            return True
        n = len(self.classify.model.rows)
        answer = QMessageBox.question(
            self, "Results not exported",
            f"The results of {n} classified files have not been exported to a CSV lab record.\n"
            "Export them before closing?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        if answer == QMessageBox.Save:
            self.classify.export_dialog()
            return not self.classify.unsaved
        return answer == QMessageBox.Discard

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if not self.confirm_discard():
            event.ignore()
            return
        Job.stop_all()   # every tab's and view's job (the outline view's finder too)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/tab", self.tabs.currentIndex())
        self.settings.sync()
        super().closeEvent(event)
