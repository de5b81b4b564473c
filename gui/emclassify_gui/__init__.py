"""emclassify's desktop front end (PySide6).

Qt code only: every action calls the Qt-free core in :mod:`emclassify`. Long work
(classification, training, cross-validation, saliency) runs in worker threads
that report per batch or epoch, so the window stays responsive and Cancel works.
"""
