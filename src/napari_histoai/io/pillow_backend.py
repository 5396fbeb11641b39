"""PNG / JPEG / BMP through Pillow (decoded into memory: these formats have no tiles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import JobError
from .image import MAX_IN_MEMORY_PIXELS, SlideImage


def open_pillow(path: Path) -> SlideImage:
    import dask.array as da
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below
    with Image.open(path) as im:
        w, h = im.size
        if w * h > MAX_IN_MEMORY_PIXELS:
            raise JobError(f"{path.name} ({w} x {h}) is too large to decode into memory; use a tiled pyramidal TIFF")
        if im.mode in ("P", "LA", "PA", "CMYK", "YCbCr"):
            im = im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB")
        arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    chunks = (min(1024, arr.shape[0]), min(1024, arr.shape[1]), arr.shape[2])
    return SlideImage(path=path, levels=[da.from_array(arr, chunks=chunks)], backend="pillow",
                      format=path.suffix.lower().lstrip("."))
