"""One resize helper for the whole package: RGB tiles to a model's resolution and back, label
images (nearest) and probability maps (bilinear). Pillow does the work: its bilinear filter
widens with the scale factor, so downsampling is anti-aliased."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["resize", "scaled_shape"]


def scaled_shape(shape: Sequence[int], factor: float) -> tuple[int, int]:
    """(h, w) of an image of ``shape`` resized by ``factor`` (new px per old px), at least 1."""
    return max(1, int(round(shape[0] * factor))), max(1, int(round(shape[1] * factor)))


def resize(arr: np.ndarray, shape: Sequence[int], kind: str = "image") -> np.ndarray:
    """Resize to ``shape`` = (h, w).

    kind ``image``: [h, w] or [h, w, C] (uint8 through Pillow's bilinear filter, other dtypes
    per channel in float32), same dtype out; ``labels``: [h, w] integer ids, nearest neighbour;
    ``map``: [K, h, w] float, bilinear per channel. Returns ``arr`` itself when the shape holds.
    """
    from PIL import Image

    arr = np.asarray(arr)
    h, w = int(shape[0]), int(shape[1])
    if kind == "map":
        if arr.shape[1:] == (h, w):
            return arr
        return np.stack([resize(c.astype(np.float32), (h, w), "image") for c in arr]) if len(arr) else \
            np.zeros((0, h, w), np.float32)
    if arr.shape[:2] == (h, w):
        return arr
    if kind == "labels":
        iy = np.minimum((np.arange(h) + 0.5) * arr.shape[0] / h, arr.shape[0] - 1).astype(np.intp)
        ix = np.minimum((np.arange(w) + 0.5) * arr.shape[1] / w, arr.shape[1] - 1).astype(np.intp)
        return arr[np.ix_(iy, ix)]
    if kind != "image":
        raise ValueError(f"unknown resize kind {kind!r}")
    if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] in (3, 4)):
        return np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))
    chans = arr[..., None] if arr.ndim == 2 else arr
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(chans[..., c], np.float32))
                               .resize((w, h), Image.BILINEAR)) for c in range(chans.shape[2])], -1)
    out = out.astype(arr.dtype) if np.issubdtype(arr.dtype, np.floating) else \
        np.clip(np.round(out), np.iinfo(arr.dtype).min, np.iinfo(arr.dtype).max).astype(arr.dtype)
    return out[..., 0] if arr.ndim == 2 else out
