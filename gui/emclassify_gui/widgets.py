"""Small widgets shared by the views."""
from __future__ import annotations

from PySide6.QtWidgets import QLabel


def error_label() -> QLabel:
    """The red, word-wrapped label each view shows its errors in (plain words, never a dialog)."""
    label = QLabel("")
    label.setStyleSheet("color: #b03a2e")
    label.setWordWrap(True)
    return label
