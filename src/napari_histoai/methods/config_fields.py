"""Schema checks for the configs of every method: each dataclass field's value must fit its
annotated type and a range rule, or a one-line ``JobError`` names the field (a mistyped
``config.json`` never ends in a TypeError deep inside a model)."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields

from ..errors import JobError

__all__ = ["check_fields", "has_type", "POSITIVE", "NON_NEGATIVE", "UNIT", "one_of", "to_json", "from_json"]


def _finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False


def has_type(v, t) -> bool:
    """Whether a JSON value fits a field type: int (not bool), float (any finite number), bool,
    str, tuple / list (a list or tuple), or a union of those."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return any(has_type(v, a) for a in typing.get_args(t))
    if t is bool:
        return isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if t is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v)
    if t in (tuple, list):
        return isinstance(v, (tuple, list))
    return isinstance(v, t)


def _type_word(t) -> str:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return " or ".join(_type_word(a) for a in typing.get_args(t))
    return {bool: "boolean", int: "int", float: "number", str: "string", tuple: "list", list: "list"}.get(t, t.__name__)


def _short(v, n: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


# range rules: (test on a value of the right type, what is expected; "{t}" = the type's word)
POSITIVE = (lambda v: v > 0, "a positive {t}")
NON_NEGATIVE = (lambda v: v >= 0, "a {t} >= 0")
UNIT = (lambda v: 0 <= v <= 1, "a {t} in [0, 1]")


def one_of(choices) -> tuple:
    return (lambda v: v in choices, "one of " + ", ".join(choices))


def check_fields(cfg, rules: dict, what: str) -> None:
    """Check every field of the dataclass ``cfg``: its value must fit the annotated type (int,
    float, bool, str, tuple/list, unions; ``None`` only where the default is ``None``) and pass
    its rule in ``rules`` ({name: (test, text)}). One-line JobError naming the field, e.g.
    ``AC-Former config field 'n_heads' must be a positive int, got 0`` (``what`` = "AC-Former
    config")."""
    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if v is None and f.default is None:
            continue
        test, text = rules.get(f.name, (None, "a {t}"))
        if not has_type(v, hints[f.name]) or (test is not None and not test(v)):
            raise JobError(f"{what} field {f.name!r} must be {text.format(t=_type_word(hints[f.name]))}, got {_short(v)}")


def to_json(cfg) -> dict:
    """A dataclass config as a JSON-ready dict (tuples become lists)."""
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def from_json(cls, d: dict):
    """``cls(**d)`` keeping only ``cls``'s fields; lists go back to tuples where the default is one."""
    out = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            default = f.default_factory() if callable(f.default_factory) else f.default
            out[f.name] = tuple(v) if isinstance(default, tuple) and isinstance(v, list) else v
    return cls(**out)
