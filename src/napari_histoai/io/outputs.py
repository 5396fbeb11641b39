"""Checks on an output path, made before any work starts (an hour of training must not end in a
traceback about the folder it cannot write to)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import JobError

__all__ = ["check_output"]


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
    parent = p.parent if str(p.parent) else Path(".")
    anc = parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise JobError(f"{what} {p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise JobError(f"{what} {p}: the folder {anc} is not writable")
    return p
