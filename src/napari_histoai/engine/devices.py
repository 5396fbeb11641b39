"""Device choice and seeding. Torch is imported lazily so IO-only use stays light."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto"):
    """Return a ``torch.device``: ``auto`` = CUDA, then MPS, then CPU.

    Asking for a device that is not available raises ``JobError`` with one clear line.
    """
    import torch

    from ..errors import JobError

    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES:
        raise JobError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise JobError("device 'cuda' was requested but no CUDA GPU is available")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise JobError("device 'mps' was requested but MPS is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run repeats on the same device.
    (Python's string hashing is not seeded: PYTHONHASHSEED only acts when the interpreter starts,
    and no job depends on set or dict-of-str iteration order.)"""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


PRECISIONS = ("auto", "float32", "bfloat16")


def inference_dtype(precision: str, device) -> "torch.dtype | None":
    """The low-precision dtype convolutions may run in at inference on ``device``, or None for
    float32. ``auto``: bfloat16 on CPUs with native bfloat16 instructions (AVX512-BF16 or AMX;
    about 2.5x faster convolutions, detections within 1 px of float32's), float32 elsewhere
    (emulated bfloat16 would be slower, and GPUs are fast enough). The environment variable
    ``HISTOAI_PRECISION`` overrides ``auto``."""
    import os

    import torch

    from ..errors import JobError

    if precision == "auto":
        precision = os.environ.get("HISTOAI_PRECISION", "auto") or "auto"
    if precision not in PRECISIONS:
        raise JobError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if torch.device(device).type != "cpu":
        return None
    native = [getattr(torch.cpu, f, None) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.bfloat16 if any(f is not None and f() for f in native) else None
