"""Checks on an output path, made before any work starts (an hour of training must not end in a
traceback about the folder it cannot write to)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from ..errors import JobError

__all__ = ["check_output", "check_folder_output", "output_lock"]


def check_output(out: str | os.PathLike, suffixes: Sequence[str], inputs: Sequence[str | os.PathLike] = (),
                 what: str = "--out") -> Path:
    """``out`` as a Path when it can be written: its name ends with one of ``suffixes``, it is
    not an existing folder, not one of ``inputs`` (also through links), and its folder exists
    (or can be created) and is writable. One-line ``JobError`` otherwise."""
    p = Path(out).expanduser()
    if not p.name.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise JobError(f"{what} must end with {' or '.join(suffixes)}, got {p.name!r}")
    if p.is_dir():
        raise JobError(f"{what} {p} is a folder; give a file name")
    for i in inputs:
        try:
            if p.exists() and Path(i).exists() and os.path.samefile(p, i):
                raise JobError(f"{what} {p} is the input file; choose another name")
        except OSError:
            pass
    return _writable_parent(p, what)


def check_folder_output(out: str | os.PathLike, what: str = "--out") -> Path:
    """``out`` as a Path when a model folder can be written there: not an existing file, not a
    non-empty folder that is not a model (no ``config.json``), its parent writable."""
    p = Path(out).expanduser()
    if p.exists() and not p.is_dir():
        raise JobError(f"{what} {p} is a file; give a folder name for the model")
    if p.is_dir() and any(p.iterdir()) and not (p / "config.json").is_file():
        raise JobError(f"{what} {p} is a folder with other files in it; give a new name for the model")
    return _writable_parent(p, what)


def _writable_parent(p: Path, what: str) -> Path:
    """``p`` when the nearest existing folder above it is a writable folder (missing folders
    in between are created by the writers)."""
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise JobError(f"{what} {p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise JobError(f"{what} {p}: the folder {anc} is not writable")
    return p


@contextmanager
def output_lock(out: str | os.PathLike):
    """Hold an exclusive lock on ``out`` for a whole task, so that two processes writing the same
    file do not silently lose one result: the second is refused with one line before it starts
    any work. The lock (``flock`` on a ``.<name>.histoai-lock`` sibling) dies with its process,
    so a killed run never blocks the next one."""
    p = Path(out)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks; last writer wins
        yield p
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    lock = p.with_name(f".{p.name}.histoai-lock")
    fh = open(lock, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"another histoai process is writing {p}; wait for it or choose another --out") from None
        yield p
    finally:
        fh.close()
        try:
            lock.unlink()
        except OSError:
            pass
