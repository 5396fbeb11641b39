"""Atomic file writes: write a temporary sibling, fsync, then rename over the target, so a
crash or kill in the middle of a save leaves the previous file intact.

The temporary file is named ``.<name>.histoai-<pid>-<random><suffix>``: temporaries of processes
that no longer exist (killed mid-write) are removed by the next write to the same target. The
new file gets the mode the old one had, or the umask's default for a new file (``mkstemp``'s
0600 would otherwise leak into shared folders).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "clean_stale_temporaries"]

_TMP = re.compile(r"^\.(?P<name>.+)\.histoai-(?P<pid>\d+)-[a-z0-9_]+(\..+)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> int:
    """Remove the temporaries of earlier writes to ``path`` whose process is gone. -> count."""
    path = Path(path)
    n = 0
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return 0
    for e in entries:
        m = _TMP.match(e.name)
        if m and m.group("name") == path.name and not _alive(int(m.group("pid"))):
            try:
                os.unlink(e.path)
                n += 1
            except OSError:
                pass
    return n


def _new_file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` then atomically move the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.histoai-{os.getpid()}-", suffix=suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, w)
