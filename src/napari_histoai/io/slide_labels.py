"""Slide-level labels in: a CSV with a header naming the slide column (``slide``, ``file``,
``image`` or ``name``) and the label column (``label``, ``class`` or ``tumour``); an optional
``mpp`` column gives the pixel size of slides whose files do not say.

Labels: ``tumour``/``tumor``/``positive``/``pos``/``yes``/``true``/``1`` -> 1;
``normal``/``no tumour``/``no tumor``/``negative``/``neg``/``no``/``false``/``0`` -> 0 (any case).
Every problem (unreadable file, missing columns, unknown label, a slide listed twice or
with two labels) is one ``JobError`` line naming the row.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import JobError
from .points import read_csv_rows

__all__ = ["read_slide_labels", "parse_label", "POSITIVE", "NEGATIVE"]

POSITIVE = ("tumour", "tumor", "positive", "pos", "yes", "true", "1")
NEGATIVE = ("normal", "no tumour", "no tumor", "non-tumour", "non-tumor", "negative", "neg", "no", "false", "0")
SLIDE_COLS = ("slide", "file", "image", "name", "filename")
LABEL_COLS = ("label", "class", "tumour", "tumor", "diagnosis")


def parse_label(value: str, where: str = "label") -> int:
    v = str(value).strip().lower()
    if v in POSITIVE:
        return 1
    if v in NEGATIVE:
        return 0
    raise JobError(f"{where}: unknown label {value!r}; use tumour or normal (also 1/0, positive/negative)")


def read_slide_labels(path: str | os.PathLike) -> dict[str, tuple[int, float | None]]:
    """{slide file name as written: (label 0/1, mpp or None)} from a labels CSV."""
    p = Path(path)
    rows = [r for r in read_csv_rows(p, "labels file ") if any(c.strip() for c in r)]
    if not rows:
        raise JobError(f"{p.name} is empty; expected a header 'slide,label' and one row per slide")
    head = [c.strip().lower() for c in rows[0]]
    try:
        si = next(head.index(c) for c in SLIDE_COLS if c in head)
        li = next(head.index(c) for c in LABEL_COLS if c in head)
    except StopIteration:
        raise JobError(f"{p.name}: the header must name a slide column ({'/'.join(SLIDE_COLS)}) and a label "
                       f"column ({'/'.join(LABEL_COLS)}); got {','.join(rows[0])}") from None
    mi = head.index("mpp") if "mpp" in head else None
    out: dict = {}
    for n, r in enumerate(rows[1:], start=2):
        where = f"{p.name} line {n}"
        if len(r) <= max(si, li):
            raise JobError(f"{where}: expected a slide and a label, got {','.join(r)!r}")
        name = r[si].strip()
        if not name:
            raise JobError(f"{where}: the slide name is empty")
        lab = parse_label(r[li], where)
        mpp = None
        if mi is not None and len(r) > mi and r[mi].strip():
            try:
                mpp = float(r[mi])
            except ValueError:
                mpp = float("nan")
            if not (math.isfinite(mpp) and 0 < mpp <= 100):
                raise JobError(f"{where}: mpp must be a positive number of µm/px, got {r[mi]!r}")
        if name in out and out[name][0] != lab:
            raise JobError(f"{where}: {name} is listed twice with different labels")
        out[name] = (lab, mpp)
    if not out:
        raise JobError(f"{p.name} lists no slides")
    return out
