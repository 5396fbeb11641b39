"""Per-file records of a batch (``DIR/records/<output>.json``) and the rule that lets a re-run
skip a file: a ``done`` record with the same task, model identity, options and input file, and
an output that is still the one the record describes."""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

from .errors import JobError

RECORDS = "records"
RUN_ONLY = ("device", "batch_size", "on_progress", "cancel")  # options that do not change a result
SELF_TRAINED = "(trained on each file)"

def record_path(out: str | os.PathLike) -> Path:
    """The JSON record of the output ``out``: ``<out folder>/records/<out name>.json``."""
    out = Path(out)
    return out.parent / RECORDS / f"{out.name}.json"


def _stat(p: str | os.PathLike) -> list | None:
    """[size, mtime_ns] of a file (a .zarr folder: of the folder entry), None when missing."""
    try:
        st = os.stat(p)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):  # NaN, inf: null in strict JSON
        return None
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
        return _jsonable(v.item())
    if hasattr(v, "tolist"):
        return _jsonable(v.tolist())
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return repr(v)


def _canonical_options(options: dict) -> dict:
    """The options that decide a result (run-only ones and None dropped), as plain JSON."""
    return _jsonable({k: options[k] for k in sorted(options) if k not in RUN_ONLY and k != "model"
                      and options[k] is not None})


@functools.lru_cache(maxsize=32)
def _digest_files(files: tuple) -> str:
    import hashlib

    h = hashlib.sha256()
    for path, _size, _mtime in files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()[:16]


def _model_identity(task: str, model: str | None) -> tuple[str | None, str]:
    """(model name to run, id for the resume check): the default detector's name for detect
    without a model; the id is a digest of the model's config and weights, or the name when the
    model cannot be found here (the task then fails with its own one-line error per file)."""
    from .models import CONFIG, WEIGHTS, resolve_model

    name = None if model is None else str(model)
    if task == "detect" and not name:
        from .methods.detection.registry import default_detector

        name = default_detector()
    if not name:
        return None, SELF_TRAINED
    if name == "classical":
        return name, name
    try:
        folder = resolve_model(name)
        files = tuple((str(folder / f), *(_stat(folder / f) or [0, 0])) for f in (CONFIG, WEIGHTS)
                      if (folder / f).is_file())
        return name, _digest_files(files) if files else name
    except (JobError, OSError):
        return name, name


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


# the model counts by its id (a digest of its files): the same model under another name or path is the same
RESUME_KEYS = ("task", "model_id", "options", "file_stat")


def _finished(rec: dict | None, key: dict, out: Path) -> bool:
    """Whether ``rec`` (a record) vouches for a finished result of the same job in ``out``."""
    return (rec is not None and rec.get("status") == "done" and all(rec.get(k) == key[k] for k in RESUME_KEYS)
            and rec.get("out_stat") is not None and rec.get("out_stat") == _stat(out))


def _write_record(path: Path, record: dict) -> None:
    from .io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(_jsonable(record), indent=1) + "\n")


# ---------------------------------------------------------------- per-process model cache
