"""Small widgets shared by the views."""
from __future__ import annotations

from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QLabel


def error_label() -> QLabel:
    """The red, word-wrapped label each view shows its errors in (plain words, never a dialog)."""
    label = QLabel("")
    label.setStyleSheet("color: #b03a2e")
    label.setWordWrap(True)
    return label


class ZoomView(QGraphicsView):
    """A picture that zooms with the mouse wheel (about the cursor) and pans by dragging.

    ``set_pixmap`` keeps the zoom and position when the same-size picture is redrawn (mask or
    saliency toggled, contrast changed) and fits a new picture to the window; ``fit`` refits.
    """

    MIN_ZOOM, MAX_ZOOM = 0.05, 64.0
    clicked = Signal(float, float)  # a click (not a drag) at this picture pixel (x, y)

    def __init__(self, placeholder: str = ""):
        super().__init__()
        self.setScene(QGraphicsScene(self))
        self.item = QGraphicsPixmapItem()
        self.item.setTransformationMode(Qt.FastTransformation)  # pixels stay pixels when zoomed in
        self.scene().addItem(self.item)
        self.placeholder = self.scene().addText(placeholder)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setBackgroundBrush(QColor("#202020"))
        self.setMinimumSize(320, 320)
        self.fitted = True

    def zoom(self) -> float:
        return self.transform().m11()

    def set_pixmap(self, pixmap: QPixmap) -> None:
        same_size = not self.item.pixmap().isNull() and self.item.pixmap().size() == pixmap.size()
        self.placeholder.setVisible(False)
        self.item.setPixmap(pixmap)
        self.scene().setSceneRect(self.item.boundingRect())
        if not same_size:
            self.fit()

    def fit(self) -> None:
        """Fit the picture to the view, and keep it fitted while the view is resized or shown,
        until the user zooms."""
        self.fitted = True
        if not self.item.pixmap().isNull():
            self.fitInView(self.item, Qt.KeepAspectRatio)

    def zoom_by(self, factor: float) -> None:
        factor = max(self.MIN_ZOOM / self.zoom(), min(self.MAX_ZOOM / self.zoom(), factor))
        self.fitted = False
        self.scale(factor, factor)

    # A picture set while the view was hidden (e.g. the Review tab filled while Classify is shown)
    # was fitted to a view of no size: refit once the view has its real size.
    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self.fitted:
            self.fit()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if self.fitted:
            self.fit()

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._press = event.position()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().mouseReleaseEvent(event)
        press = getattr(self, "_press", None)
        if press is not None and (event.position() - press).manhattanLength() < 4:
            p: QPointF = self.mapToScene(event.position().toPoint())
            self.clicked.emit(p.x(), p.y())
        self._press = None

    def wheelEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.zoom_by(1.25 if event.angleDelta().y() > 0 else 0.8)
