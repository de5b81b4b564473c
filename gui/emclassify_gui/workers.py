"""Running core calls off the GUI thread.

:class:`Job` wraps a function ``fn(report, cancel, *args)``: ``report(obj)``
emits ``progress`` (delivered to the GUI thread as a queued signal) and
``cancel`` is an :class:`emclassify.inference.CancelToken` the GUI can set.
The function's return value arrives in ``done``; an exception arrives in
``failed`` as a plain-words message (never a traceback dialog).
"""
from __future__ import annotations

import traceback

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from emclassify.runtime import CancelToken


def plain_message(exc: BaseException) -> str:
    """An error in plain words: the core's messages already name the file and the problem."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (MemoryError,)):
        return "out of memory: try a smaller batch or input size"
    return text


class _EndWatcher(QObject):
    """Lives in the GUI thread and hears a job's ``done``/``failed`` before any view does (it is
    connected first, in the job's constructor, and queued calls to one thread run in connection
    order), so a view's handler already sees the job as ended."""

    def __init__(self, job: "Job"):
        super().__init__()
        self.job = job

    @Slot(object)
    def on_done(self, _result) -> None:
        self.job._active = False

    @Slot(str)
    def on_failed(self, _message) -> None:
        self.job._active = False


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
        self._active = False
        self._watcher = _EndWatcher(self)
        self.done.connect(self._watcher.on_done)
        self.failed.connect(self._watcher.on_failed)

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(self.progress.emit, self.cancel, *self.args, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is shown in the window, in words
            traceback.print_exc()
            self.failed.emit(plain_message(exc))
        else:
            self.done.emit(result)

    def start(self) -> "Job":
        """Run in a new QThread; the thread ends when the job does and is then deleted.

        The thread belongs to the application, not to the view that started the job: a view deleted
        while its job still ran (a closed window whose job outlasted ``stop_all``'s wait) used to take
        the running thread with it, and Qt aborts the whole process then. The view's slots are
        disconnected when it goes; the job finishes unheard."""
        self.thread = QThread(QCoreApplication.instance())
        self.moveToThread(self.thread)
        self.thread.started.connect(self.run)
        self.done.connect(self.thread.quit)
        self.failed.connect(self.thread.quit)
        Job._running.add(self)
        self.thread.finished.connect(lambda: Job._running.discard(self))
        self.thread.finished.connect(self.thread.deleteLater)
        self._active = True
        self.thread.start()
        return self

    def is_running(self) -> bool:
        """Whether the job's result is still to come. Its thread quits a moment after ``done`` or
        ``failed``: asking the thread instead answered "running" inside those signals' handlers, so
        a handler that started the next job (the outline view after a click elsewhere) did nothing."""
        return self._active

    @classmethod
    def stop_all(cls, ms: int = 5000) -> None:
        """Cancel every job whose thread is still alive and wait for the threads (before the window
        closes: a thread destroyed while running aborts the process)."""
        for job in list(cls._running):
            job.stop_and_wait(ms)

    def stop_and_wait(self, ms: int = 5000) -> None:
        self.cancel.cancel()
        if self in Job._running:   # its thread is alive (it is deleted once it has finished)
            self.thread.quit()
            self.thread.wait(ms)
