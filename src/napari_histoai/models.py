"""Named models: checkpoint folders (safetensors weights + JSON config), bundled defaults and
the user's trained models.

A model is a folder ``<name>/`` with ``weights.safetensors`` and ``config.json``. The config is
a dict with at least ``kind`` (e.g. ``"acformer-detector"``), ``architecture`` (a dict the
method's ``build`` understands) and ``package_version``; detectors add ``classes`` and ``mpp``
(µm/px the model was trained at), and every trainer records ``training`` and ``metrics``.
Nothing here unpickles: safetensors holds raw tensors only, JSON holds the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from .bundled import resources_dir
from .errors import JobError

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"

_listeners: list = []


def on_models_changed(callback) -> None:
    """Register ``callback()`` to run after a model is saved (e.g. to refresh a model selector).
    Callbacks run in the saving thread; GUI code should marshal to its own thread."""
    _listeners.append(callback)


def remove_models_listener(callback) -> None:
    if callback in _listeners:
        _listeners.remove(callback)


def _notify() -> None:
    for cb in list(_listeners):
        try:
            cb()
        except Exception:  # a closed widget must not break saving
            remove_models_listener(cb)


def user_models_dir() -> Path:
    """Where models a user trains are saved by default (``$HISTOAI_MODELS`` overrides)."""
    env = os.environ.get("HISTOAI_MODELS")
    return Path(env) if env else Path.home() / ".napari-histoai" / "models"


def bundled_models_dir() -> Path:
    return resources_dir() / "models"


def list_models(kind: Optional[str] = None) -> dict[str, Path]:
    """Bundled and user models, ``{name: folder}``, optionally only those of ``kind``.
    User models shadow bundled ones of the same name."""
    found: dict[str, Path] = {}
    for root in (bundled_models_dir(), user_models_dir()):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            cfg = folder / CONFIG
            if not (cfg.is_file() and (folder / WEIGHTS).is_file()):
                continue
            if kind is not None:
                try:
                    if json.loads(cfg.read_text()).get("kind") != kind:
                        continue
                except (OSError, ValueError):
                    continue
            found[folder.name] = folder
    return found


def resolve_model(name_or_path: str | os.PathLike, kind: Optional[str] = None) -> Path:
    """A model folder from a bundled/user name or a path (folder, or its weights/config file)."""
    p = Path(name_or_path)
    if p.exists():
        if p.is_file():
            p = p.parent
        return p
    models = list_models(kind)
    if str(name_or_path) in models:
        return models[str(name_or_path)]
    if kind is not None and str(name_or_path) in list_models():
        read_config(list_models()[str(name_or_path)], kind)  # says which kind it is instead
    names = ", ".join(sorted(models)) or "none"
    raise JobError(f"no model named {str(name_or_path)!r} (available: {names})")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_model_name(name: str) -> str:
    """A new model's name: letters, digits, ``.-_``; not a bundled model or 'classical'."""
    name = (name or "").strip()
    if not _NAME.match(name):
        raise JobError(f"model name {name!r}: use 1-64 letters, digits, '.', '-' or '_'")
    if name == "classical" or (bundled_models_dir() / name).exists():
        raise JobError(f"{name!r} is a built-in model; choose another name")
    return name


def save_checkpoint(folder: str | os.PathLike, state_dict: dict, config: dict) -> Path:
    """Write ``state_dict`` (name -> tensor) and ``config`` into ``folder`` atomically: files are
    written to a temporary sibling folder that then replaces the target."""
    from safetensors.torch import save_file

    from . import __version__

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config.setdefault("package_version", __version__)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=_json_default))
        if folder.exists():
            old = folder.with_name(folder.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _notify()
    return folder


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_config(folder: str | os.PathLike, kind: Optional[str] = None) -> dict:
    """The JSON config of a model folder; ``JobError`` if missing, malformed or of another kind."""
    folder = Path(folder)
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise JobError(f"{folder} is not a napari-histoai model (no {CONFIG})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise JobError(f"model config {cfg_path} is unreadable: {e}") from None
    if not isinstance(cfg, dict) or "kind" not in cfg:
        raise JobError(f"model config {cfg_path} has no 'kind'; not a napari-histoai model")
    if kind is not None and cfg["kind"] != kind:
        raise JobError(f"{folder.name} is a {cfg['kind']!r} model, not a {kind!r} model")
    return cfg


def load_checkpoint(name_or_path: str | os.PathLike, kind: Optional[str] = None) -> tuple[dict, dict]:
    """(state_dict of CPU tensors, config) of a model; one-line ``JobError`` on any problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_model(name_or_path, kind)
    cfg = read_config(folder, kind)
    w = folder / WEIGHTS
    if not w.is_file():
        raise JobError(f"model {folder} has no {WEIGHTS}")
    try:
        state = load_file(str(w), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise JobError(f"weights file {w} is corrupt or not safetensors: {str(e).splitlines()[0]}") from None
    return state, cfg


def load_state_strict(module, state: dict, what: str = "model") -> None:
    """``module.load_state_dict(state)`` that turns key/shape mismatches into one-line errors."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise JobError(f"{what} weights do not fit its architecture ({first})") from None
