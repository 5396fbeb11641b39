"""Which files a command works on: files as given, folders expanded to the images inside them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import JobError

__all__ = ["IMAGE_SUFFIXES", "expand_inputs"]

IMAGE_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".scn", ".mrxs", ".bif", ".png", ".jpg", ".jpeg", ".zarr")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expand to the images directly inside them (sorted; a ``.zarr``
    folder is one image). Inputs that do not exist raise one line; duplicates are dropped."""
    out: list[Path] = []
    for i in inputs:
        p = Path(i)
        if p.is_dir() and not p.name.lower().endswith(".zarr"):
            out += sorted(q for q in p.iterdir() if q.name.lower().endswith(IMAGE_SUFFIXES) and not q.name.startswith("."))
        elif p.exists():
            out.append(p)
        else:
            raise JobError(f"no such file or folder: {p}")
    if not out:
        raise JobError("no images to process")
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique
