"""Device choice and seeding. Torch is imported lazily so IO-only use stays light."""

from __future__ import annotations

import random

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
