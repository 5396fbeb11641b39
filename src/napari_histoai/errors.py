"""The error and cancel types every layer may raise: the ground floor of the package (imports
nothing of it).

* :class:`JobError` - a user-facing error (bad input, unreadable file, wrong model): its message
  is one line shown verbatim (a napari notification, the CLI's stderr with exit code 2);
* :class:`Cancelled` - raised inside a job when the user cancelled it;
* :class:`CancelFlag` / :func:`check_cancel` - a thread-safe cancel request a job checks between
  tiles or steps.
"""

from __future__ import annotations

import threading
from typing import Optional

__all__ = ["JobError", "Cancelled", "CancelFlag", "check_cancel"]


class JobError(Exception):
    """A user-facing error: bad input, unreadable file, wrong model. The message is one line
    meant to be shown verbatim (napari notification, CLI stderr)."""


class Cancelled(Exception):
    """Raised inside a job when its cancel flag is set."""


class CancelFlag:
    """A thread-safe cancel request, shared between a front end and a running job."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    __bool__ = is_set


def check_cancel(flag: Optional[CancelFlag]) -> None:
    """Raise :class:`Cancelled` if ``flag`` is set (no-op for ``None``)."""
    if flag is not None and flag.is_set():
        raise Cancelled("cancelled by the user")
