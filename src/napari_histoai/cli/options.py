"""Argument types and option blocks shared by the subcommands: numbers are checked when the
command line is parsed, so nonsense never starts a job."""

from __future__ import annotations

import argparse
import math

from ..errors import JobError


def _number(kind, text: str, lo=None, hi=None, lo_open=False):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text}")
    if hi is not None and v > hi:
        raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text}")
    return v


def positive_float(text: str) -> float:
    return _number(float, text, 0, lo_open=True)


def positive_int(text: str) -> int:
    return _number(int, text, 1)


def unit_float(text: str) -> float:
    """A number in [0, 1] (scores, fractions)."""
    return _number(float, text, 0, 1)


def nonnegative_float(text: str) -> float:
    return _number(float, text, 0)


def fraction_below_one(text: str) -> float:
    """A number in [0, 1)."""
    v = _number(float, text, 0)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"must be < 1, got {text}")
    return v


def tile_size(text: str) -> int:
    """A TIFF tile side: a positive multiple of 16."""
    v = _number(int, text, 16)
    if v % 16:
        raise argparse.ArgumentTypeError(f"must be a multiple of 16, got {text}")
    return v


def mpp_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mpp", type=positive_float, default=None, metavar="UM_PER_PX",
                   help="pixel size of the image in µm/px, for files that carry none (PNG, JPEG, untagged TIFF) "
                        "or to override the file's; without it such images are assumed to be at the model's "
                        "resolution, and the command says so")


def parse_region(text: str | None):
    """``y0,x0,y1,x1`` (level-0 px) -> tuple of 4 finite floats, or None."""
    if not text:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise JobError(f"--region must be y0,x0,y1,x1 in level-0 pixels, got {text!r}") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise JobError(f"--region must be 4 finite numbers y0,x0,y1,x1, got {text!r}")
    return tuple(vals)


def json_line(obj) -> str:
    """Strict JSON for stdout: NaN and infinities (e.g. an F_c with no nucleus of a class)
    become null, which every JSON reader accepts."""
    import json

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), allow_nan=False, default=str)
