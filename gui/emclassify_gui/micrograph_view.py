"""A micrograph of a micrograph run with its particles outlined in their class colours.

Selecting a particle row shows its micrograph (zoom and pan as in Review) with the particle
filled; clicking a particle selects its row. The particles are found again by the run's own
finder (:class:`emclassify.micrographs.ParticleLookup`) in a worker thread: the CSV keeps boxes,
not masks.
"""
from __future__ import annotations

import html
from typing import Dict, List, Optional

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from emclassify.inference import FileResult
from emclassify.micrographs import ParticleLookup, micrograph_warnings

from .imaging import class_colour, micrograph_outlines
from .widgets import ZoomView
from .workers import Job


def find_job(report, cancel, lookup: ParticleLookup, relpath: str):
    image, det = lookup.micrograph(relpath)
    return relpath, image, det


class MicrographPanel(QWidget):
    particle_clicked = Signal(str, int)  # micrograph (relative path), particle index

    def __init__(self):
        super().__init__()
        self.view = ZoomView("Select a particle in the table\nto see it in its micrograph.")
        self.view.clicked.connect(self._clicked)
        self.view.setMinimumSize(220, 220)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.key = QLabel("")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.key)
        layout.addWidget(self.caption)
        self.lookup: Optional[ParticleLookup] = None
        self.classes: List[str] = []
        self.shown: Optional[tuple] = None      # (relpath, image, Detections)
        self.want: Optional[tuple] = None       # (relpath, rows, selected) asked for
        self.job: Optional[Job] = None

    def set_run(self, run, classes: List[str]) -> None:
        """A new run: forget what was shown; the finder is rebuilt from the run's record."""
        self.shown = self.want = None
        self.classes = list(classes)
        try:
            self.lookup = ParticleLookup.for_run(run)
        except ValueError as exc:
            self.lookup = None
            self.caption.setText(f"Outlines cannot be shown: {html.escape(str(exc))}")
            return
        self.caption.setText("")
        self.key.setText("  ".join(f"<span style='color:rgb{class_colour(k)}'>■</span> {html.escape(c)}"
                                   for k, c in enumerate(self.classes)))

    def show_particle(self, relpath: str, rows: List[FileResult], selected: Optional[int]) -> None:
        """Show ``relpath`` with ``rows`` (its particle rows) outlined and ``selected`` filled."""
        self.want = (relpath, rows, selected)
        if self.lookup is None:
            return
        if self.shown is not None and self.shown[0] == relpath:
            self._draw()
        elif self.job is None or not self.job.is_running():
            self.caption.setText(f"finding the particles of {html.escape(relpath)}…")
            self.job = Job(find_job, self.lookup, relpath)
            self.job.done.connect(self._found)
            self.job.failed.connect(self._find_failed)  # a bound method runs in the GUI thread, a lambda would not
            self.job.start()

    def _find_failed(self, message: str) -> None:
        self.caption.setText(f"Outlines cannot be shown: {html.escape(message)}")

    def _found(self, result) -> None:
        self.shown = result
        if self.want is not None and self.want[0] != result[0]:
            self.show_particle(*self.want)  # the user moved on while this one was found
        else:
            self._draw()

    def _draw(self) -> None:
        relpath, image, det = self.shown
        _, rows, selected = self.want
        index = {c: k for k, c in enumerate(self.classes)}
        class_of: Dict[int, Optional[int]] = {r.particle.index: index.get(r.predicted_class)
                                              for r in rows if r.particle is not None}
        self.view.set_pixmap(QPixmap.fromImage(micrograph_outlines(image, det.labels, class_of, selected)))
        n = len(det.particles)
        doubts = "".join(f"<br><b>Warning:</b> {html.escape(w)}" for w in micrograph_warnings(rows))
        self.caption.setText(f"{html.escape(relpath)}: {n} particle{'s' if n != 1 else ''}"
                             + (f" · particle {selected} filled" if selected else "")
                             + " · click a particle to select its row" + doubts)

    def _clicked(self, x: float, y: float) -> None:
        if self.shown is None:
            return
        relpath, _, det = self.shown
        row, col = int(np.floor(y)), int(np.floor(x))
        if 0 <= row < det.labels.shape[0] and 0 <= col < det.labels.shape[1]:
            k = int(det.labels[row, col])
            if k:
                self.particle_clicked.emit(relpath, k)
