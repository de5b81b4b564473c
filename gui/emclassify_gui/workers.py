"""Running core calls off the GUI thread.

:class:`Job` wraps a function ``fn(report, cancel, *args)``: ``report(obj)``
emits ``progress`` (delivered to the GUI thread as a queued signal) and
``cancel`` is an :class:`emclassify.inference.CancelToken` the GUI can set.
The function's return value arrives in ``done``; an exception arrives in
``failed`` as a plain-words message (never a traceback dialog).
"""
from __future__ import annotations

import traceback

from PySide6.QtCore import QObject, QThread, Signal, Slot

from emclassify.runtime import CancelToken


def plain_message(exc: BaseException) -> str:
    """An error in plain words: the core's messages already name the file and the problem."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (MemoryError,)):
        return "out of memory: try a smaller batch or input size"
    return text


class Job(QObject):
    progress = Signal(object)
    done = Signal(object)
    failed = Signal(str)

    # Jobs still running, so Python keeps them alive even when the view that started one
    # has already replaced its reference (e.g. clicking through the review gallery quickly).
    _running: "set[Job]" = set()

    def __init__(self, fn, *args, **kwargs):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.cancel = CancelToken()
        self.thread: QThread | None = None

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(self.progress.emit, self.cancel, *self.args, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is shown in the window, in words
            traceback.print_exc()
            self.failed.emit(plain_message(exc))
        else:
            self.done.emit(result)

    def start(self, parent: QObject) -> "Job":
        """Run in a new QThread owned by ``parent``; the thread ends when the job does."""
        self.thread = QThread(parent)
        self.moveToThread(self.thread)
        self.thread.started.connect(self.run)
        self.done.connect(self.thread.quit)
        self.failed.connect(self.thread.quit)
        Job._running.add(self)
        self.thread.finished.connect(lambda: Job._running.discard(self))
        self.thread.start()
        return self

    def is_running(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    def stop_and_wait(self, ms: int = 5000) -> None:
        self.cancel.cancel()
        if self.thread is not None:
            self.thread.quit()
            self.thread.wait(ms)
