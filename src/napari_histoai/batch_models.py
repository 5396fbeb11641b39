"""Models loaded once per batch worker process: a cache the per-file tasks' loaders are routed
through inside a worker, keyed by model folder, weights stamp and device."""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager


class ModelCache:
    """Loaded models of one worker process, reused by the files it runs. Keys are (loader,
    arguments, weights stamp); each loaded model is lent to one file at a time (inside
    :meth:`lending`) and comes back when that file is done, so files running at the same time
    in one process never share a model's per-slide state. Plain data (state dicts) is shared,
    and only kept when it was not read by a cached model loader (the model has it already).
    At most ``max_keys`` different models are kept (least recently used dropped)."""

    def __init__(self, max_keys: int = 4):
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._idle: OrderedDict = OrderedDict()  # key -> [model, ...] not lent now
        self._local = threading.local()

    def wrap(self, load: Callable, key_of: Callable, shared: bool = False) -> Callable:
        """``load`` with the cache in front; ``key_of(*args, **kw)`` -> hashable key or None
        (None: not cached). ``shared``: the value is read-only data, handed to every caller."""

        @functools.wraps(load)
        def cached(*args, **kw):
            try:
                key = key_of(*args, **kw)
            except Exception:  # noqa: BLE001 - no key: the loader itself says what is wrong
                key = None
            lent = getattr(self._local, "lent", None)
            nested = getattr(self._local, "depth", 0) > 0
            # data read while a cached model loads is not kept twice (the model holds a copy)
            if key is None or (lent is None and not shared) or (shared and nested):
                return load(*args, **kw)
            key = (load.__module__, load.__qualname__, key)
            with self._lock:
                pool = self._idle.get(key)
                obj = (pool[0] if shared else pool.pop()) if pool else None
                if pool is not None:
                    self._idle.move_to_end(key)
            hit = obj is not None
            if obj is None:
                self._local.depth = getattr(self._local, "depth", 0) + 1
                try:
                    obj = load(*args, **kw)
                finally:
                    self._local.depth -= 1
            if not nested:  # a load inside another counts as part of it
                self._count("reused" if hit else "loaded")
            if shared:
                self._put(key, obj, replace=True)
            else:
                lent.append((key, obj))
            return obj

        cached.__wrapped_by_histoai__ = True
        return cached

    def _count(self, what: str) -> None:
        counts = getattr(self._local, "counts", None)
        if counts is not None:
            counts[what] += 1

    def _put(self, key, obj, replace: bool = False) -> None:
        with self._lock:
            if replace or key not in self._idle:
                self._idle[key] = [obj]
            else:
                self._idle[key].append(obj)
            self._idle.move_to_end(key)
            while len(self._idle) > self.max_keys:
                self._idle.popitem(last=False)

    @contextmanager
    def lending(self):
        """Models loaded in this thread are lent to the running file until the block ends;
        yields {loaded, reused} counts of this block."""
        counts = {"loaded": 0, "reused": 0}
        self._local.lent, self._local.counts = [], counts
        try:
            yield counts
        finally:
            lent, self._local.lent, self._local.counts = self._local.lent, None, None
            for key, obj in lent:
                self._put(key, obj)


MODEL_CACHE = ModelCache()
_installed = False
_install_lock = threading.Lock()


def _weights_stamp(name_or_path, kind=None):
    """(folder, weights size, mtime_ns): a retrained model of the same name is a new key."""
    from .models import WEIGHTS, resolve_model

    folder = resolve_model(name_or_path, kind)
    st = os.stat(folder / WEIGHTS)
    return str(folder), st.st_size, st.st_mtime_ns


def install_model_cache(task: str | None = None) -> None:
    """Put :data:`MODEL_CACHE` in front of the loaders the tasks call, in this process (a worker
    calls it before each file). Idempotent. The contrastive segmenter's loader is wrapped for
    ``segment`` or once its module is imported, the adapted segmenter's for ``instances`` or once
    its module is imported: importing them imports torch (seconds), which the classical detector
    never needs."""
    global _installed
    with _install_lock:
        if _installed is True:
            return
        from . import models
        from .methods.detection import registry

        if task == "segment" or "napari_histoai.methods.contrastive" in sys.modules:
            from .methods import contrastive
        else:
            contrastive = None

        def detector_key(name_or_path, device="auto", fast=False, tta=False):
            name = str(name_or_path)
            stamp = name if name == registry.CLASSICAL else _weights_stamp(name_or_path)
            return stamp, str(device), bool(fast), bool(tta)

        def checkpoint_key(name_or_path, kind=None):
            return _weights_stamp(name_or_path, kind), kind

        def copy_checkpoint(load):
            # shared state dict: callers get their own dict and config (tensors are only copied from)
            @functools.wraps(load)
            def f(*args, **kw):
                import copy

                state, cfg = load(*args, **kw)
                return dict(state), copy.deepcopy(cfg)
            return f

        if not getattr(registry.load_detector, "__wrapped_by_histoai__", False):
            registry.load_detector = MODEL_CACHE.wrap(registry.load_detector, detector_key)
        if contrastive is not None and not getattr(contrastive.load_model, "__wrapped_by_histoai__", False):
            contrastive.load_model = MODEL_CACHE.wrap(contrastive.load_model,
                                                      lambda name_or_path: _weights_stamp(name_or_path))
        adaptation = None
        if task == "instances" or "napari_histoai.methods.adaptation" in sys.modules:
            try:
                from .methods import adaptation
            except ImportError:  # pragma: no cover - a build without domain adaptation
                adaptation = None
        if adaptation is not None and not getattr(adaptation.load_adapted_model, "__wrapped_by_histoai__", False):
            adaptation.load_adapted_model = MODEL_CACHE.wrap(
                adaptation.load_adapted_model,
                lambda name_or_path=adaptation.BUNDLED, device="cpu": (
                    _weights_stamp(name_or_path, adaptation.KIND), str(device)))
        try:
            from .methods import heatmap
        except ImportError:  # pragma: no cover - a build without heatmaps
            heatmap = None
        if heatmap is not None and not getattr(heatmap.load_heatmap_model, "__wrapped_by_histoai__", False):
            heatmap.load_heatmap_model = MODEL_CACHE.wrap(
                heatmap.load_heatmap_model,
                lambda name_or_path, device="cpu": (_weights_stamp(name_or_path, heatmap.KIND), str(device)))
        if not getattr(models.load_checkpoint, "__wrapped_by_histoai__", False):
            models.load_checkpoint = copy_checkpoint(MODEL_CACHE.wrap(models.load_checkpoint, checkpoint_key,
                                                                      shared=True))
            models.load_checkpoint.__wrapped_by_histoai__ = True
        # done for good once the torch-importing methods are wrapped too (until then, each call
        # wraps those a task has imported since)
        _installed = contrastive is not None and adaptation is not None


# ---------------------------------------------------------------- one file, on a worker
