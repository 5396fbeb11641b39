"""Formats tifffile cannot read (MIRAX, VMS, Leica SCN, DICOM, ...) through OpenSlide, when
openslide-python and openslide-bin are installed. Each level is a lazy dask array whose chunks
call ``read_region``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .image import SlideImage


def openslide_available() -> bool:
    try:
        import openslide  # noqa: F401
    except Exception:
        return False
    return True


class _OpenSlideLevel:
    """Array-like view [Y, X, 3] uint8 of one OpenSlide level (for ``dask.array.from_array``)."""

    def __init__(self, slide, level: int):
        self.slide = slide
        self.level = level
        w, h = slide.level_dimensions[level]
        self.shape = (h, w, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.downsample = slide.level_downsamples[level]

    def __getitem__(self, key):
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)[(slice(None), slice(None)) + tuple(key[2:])]
        # read_region takes level-0 coordinates for the top-left corner, size in level pixels
        loc = (int(round(x0 * self.downsample)), int(round(y0 * self.downsample)))
        rgba = np.asarray(self.slide.read_region(loc, self.level, (x1 - x0, y1 - y0)))
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = 255  # transparent = outside the scanned area: white
        rest = tuple(key[2:]) if len(key) > 2 else ()
        return rgb[(slice(None), slice(None)) + rest] if rest else rgb


def open_openslide(path: Path) -> SlideImage:
    import dask.array as da
    import openslide

    slide = openslide.OpenSlide(str(path))
    levels = [
        da.from_array(_OpenSlideLevel(slide, i), chunks=(1024, 1024, 3), asarray=False, fancy=False)
        for i in range(slide.level_count)
    ]
    props = slide.properties
    mpp = props.get(openslide.PROPERTY_NAME_MPP_X)
    mag = props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
    return SlideImage(
        path=path, levels=levels,
        mpp=float(mpp) if mpp else None, magnification=float(mag) if mag else None,
        backend="openslide", format=str(props.get(openslide.PROPERTY_NAME_VENDOR, "openslide")),
        _close=slide.close,
    )
