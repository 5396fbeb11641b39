"""The job pattern shared by the GUI, the CLI and the batch runner.

A *job* is a generator function. It ``yield``s :class:`Progress` items between units of work
(tiles, training steps) and ``return``s its result. Cancelling is cooperative:

* a front end that iterates the generator stops iterating and calls ``close()``: the job sees
  ``GeneratorExit`` at its current ``yield`` and ``finally`` blocks clean up;
* a job can also be handed a :class:`~napari_histoai.errors.CancelFlag` (e.g. by a thread that
  cannot close it) and checks it via :func:`~napari_histoai.errors.check_cancel` between steps,
  raising :class:`~napari_histoai.errors.Cancelled`.

Napari's ``thread_worker`` runs generator functions natively (``worker.quit()`` closes the
generator at the next yield); :func:`run_job` below is the CLI / batch / test runner.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Optional

from ..errors import CancelFlag, Cancelled

__all__ = ["Progress", "Job", "run_job", "run_with_tqdm", "tqdm_progress"]


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` units; ``info`` carries optional live values
    (e.g. ``{"loss": 0.3}`` or a preview array) that a front end may show."""

    done: int
    total: int
    message: str = ""
    info: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


Job = Generator[Progress, None, Any]


def run_job(
    job: Job,
    on_progress: Optional[Callable[[Progress], None]] = None,
    cancel: Optional[CancelFlag] = None,
) -> Any:
    """Run a job to completion in the calling thread and return its result.

    ``on_progress`` is called for every yielded :class:`Progress`. If ``cancel`` becomes set the
    generator is closed at its next yield and :class:`Cancelled` is raised.
    """
    try:
        while True:
            try:
                item = next(job)
            except StopIteration as stop:
                return stop.value
            if on_progress is not None and isinstance(item, Progress):
                on_progress(item)
            if cancel is not None and cancel.is_set():
                job.close()
                raise Cancelled("cancelled by the user")
    finally:
        job.close()


@contextmanager
def tqdm_progress(desc: str = ""):
    """Context giving ``show(progress)``, which feeds one tqdm bar on stderr (the CLI's display)."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="", dynamic_ncols=True, leave=False, disable=None)  # None: not on a pipe

    def show(p: Progress) -> None:
        if bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        if p.message:
            bar.set_postfix_str(p.message, refresh=False)
        bar.refresh()

    try:
        yield show
    finally:
        bar.close()


def run_with_tqdm(job: Job, desc: str = "", cancel: Optional[CancelFlag] = None) -> Any:
    """Run a job with a tqdm progress bar on stderr."""
    with tqdm_progress(desc) as show:
        return run_job(job, show, cancel)
