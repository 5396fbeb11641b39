"""Run a job from a dock without freezing napari: progress bar, status line, Cancel button.

``JobPanel.run(job, on_done)`` executes the generator ``job`` in napari's ``thread_worker``;
each yielded :class:`~napari_histoai.engine.jobs.Progress` updates the bar (and is passed to
``on_progress`` in the GUI thread); the returned value goes to ``on_done`` in the GUI thread.
Cancel sets the job's flag and asks the worker to quit: the job is closed at its next yield.
Errors become one napari notification line. ``sync = True`` runs jobs in the calling thread
(deterministic tests).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Callable, Optional

from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..engine.jobs import Progress, run_job
from ..errors import CancelFlag, Cancelled, JobError

log = logging.getLogger(__name__)
_frozen_jobs = 0


def _hold_gc(on: bool) -> None:
    """While jobs run, the objects napari already holds (~300k) are moved out of the cyclic
    garbage collector's sight (``gc.freeze``): a full collection triggered by the worker's
    allocations otherwise scans them all with the GIL held, stalling the GUI for ~150 ms. They
    are handed back (``gc.unfreeze``) when the last running job ends."""
    import gc

    global _frozen_jobs
    if on:
        if _frozen_jobs == 0:
            gc.freeze()
        _frozen_jobs += 1
    elif _frozen_jobs > 0:
        _frozen_jobs -= 1
        if _frozen_jobs == 0:
            gc.unfreeze()


def _relay(job, flag: CancelFlag):
    """Generator function for the worker: forwards the job's progress, honours the flag."""
    try:
        while True:
            if flag.is_set():
                raise Cancelled("cancelled by the user")
            try:
                item = next(job)
            except StopIteration as stop:
                return stop.value
            yield item
    finally:
        job.close()


def error_line(exc: BaseException) -> str:
    """One line for the user; the traceback of unexpected errors goes to the log."""
    if isinstance(exc, (JobError, ValueError)) and str(exc):
        return str(exc).splitlines()[0]
    log.error("unexpected error in a job:\n%s", "".join(traceback.format_exception(exc)))
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def notify_error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


class JobPanel(QWidget):
    """Progress bar + status line + Cancel button for one running job at a time."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.sync = False
        self.worker = None
        self.last_error: Optional[str] = None
        self._flag: Optional[CancelFlag] = None
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.status)

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.worker is not None

    def show_progress(self, p: Progress) -> None:
        if p.total > 0:
            self.bar.setRange(0, p.total)
            self.bar.setValue(min(p.done, p.total))
        else:
            self.bar.setRange(0, 0)  # busy indicator
        if p.message:
            self.status.setText(p.message)

    def _finish(self) -> None:
        if self._flag is not None:
            _hold_gc(False)
        self.worker = None
        self._flag = None
        self.cancel_btn.setEnabled(False)
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)

    def cancel(self) -> None:
        """Ask the running job to stop at its next step."""
        if self._flag is not None:
            self._flag.set()
        if self.worker is not None:
            self.worker.quit()
        self.status.setText("Cancelling…")

    # ------------------------------------------------------------------ run
    def run(
        self,
        job,
        on_done: Callable[[Any], None],
        on_progress: Optional[Callable[[Progress], None]] = None,
        on_cancel: Optional[Callable[[], None]] = None,
        on_error: Optional[Callable[[str], None]] = None,
    ):
        """Start ``job``; returns the napari worker (None in sync mode)."""
        if self.running:
            notify_error("a job is already running in this panel; cancel it first")
            job.close()
            return None
        self.last_error = None
        flag = self._flag = CancelFlag()
        self.cancel_btn.setEnabled(True)
        self.bar.setRange(0, 0)
        _hold_gc(True)

        def progress(p: Progress) -> None:
            if isinstance(p, Progress):
                self.show_progress(p)
                if on_progress is not None:
                    on_progress(p)

        def done(result: Any) -> None:
            self.bar.setRange(0, 1)
            self.bar.setValue(1)
            on_done(result)

        def cancelled(*_a) -> None:
            self.status.setText("Cancelled")
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
            if on_cancel is not None:
                on_cancel()

        def failed(exc: BaseException) -> None:
            if isinstance(exc, Cancelled):
                return cancelled()
            msg = error_line(exc)
            self.last_error = msg
            self.status.setText(f"Error: {msg}")
            notify_error(msg)
            if on_error is not None:
                on_error(msg)

        if self.sync:
            try:
                result = run_job(_relay(job, flag), progress, flag)
            except Cancelled:
                cancelled()
            except Exception as exc:  # noqa: BLE001 - shown to the user as one line
                failed(exc)
            else:
                done(result)
            finally:
                self._finish()
            return None

        from napari.qt.threading import create_worker

        worker = create_worker(_relay, job, flag, _start_thread=False)
        worker.yielded.connect(progress)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.aborted.connect(cancelled)
        worker.finished.connect(self._finish)
        self.worker = worker
        worker.start()
        return worker


def models_listener(widget, dock: str):
    """A models-changed callback (``models.on_models_changed``) that emits ``widget._models_saved``
    (a queued Qt signal, so the refresh runs on the GUI thread) while the dock lives; once it is
    gone the callback raises, which removes it from the listeners."""
    import weakref

    ref = weakref.ref(widget)

    def on_models_saved() -> None:
        w = ref()
        if w is None:
            raise RuntimeError(f"the {dock} dock was closed")
        w._models_saved.emit()

    return on_models_saved
