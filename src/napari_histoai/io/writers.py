"""Images out: tiled pyramidal OME-TIFF (SubIFD levels) for slides, labels and heatmaps.

Writers stream tile by tile from any array-like with ``shape`` and slicing (numpy, dask, zarr),
so an image never has to fit in memory; files are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import JobError
from .atomic import atomic_write


def _n_levels(h: int, w: int, tile: int, min_size: int) -> int:
    n = 1
    while max(h, w) / 2 ** n >= max(min_size, tile):
        n += 1
    return n


def _tiles(arr, factor: int, tile: int, reduce: str) -> Iterator[np.ndarray]:
    """Tiles [tile, tile(, C)] of ``arr`` downsampled by ``factor`` (strided for labels, block
    mean for images), row-major, padded at the edges."""
    h, w = arr.shape[:2]
    H, W = -(-h // factor), -(-w // factor)
    for ty in range(0, H, tile):
        for tx in range(0, W, tile):
            y0, x0 = ty * factor, tx * factor
            y1, x1 = min(h, (ty + tile) * factor), min(w, (tx + tile) * factor)
            block = np.asarray(arr[y0:y1, x0:x1])
            if factor > 1:
                if reduce == "nearest":
                    block = block[::factor, ::factor]
                else:
                    bh, bw = block.shape[0] // factor * factor, block.shape[1] // factor * factor
                    if bh and bw:
                        core = block[:bh, :bw].reshape(bh // factor, factor, bw // factor, factor, *block.shape[2:])
                        block = core.mean(axis=(1, 3)).astype(arr.dtype)
                    else:
                        block = block[::factor, ::factor]
            out = np.zeros((tile, tile) + tuple(arr.shape[2:]), dtype=arr.dtype)
            out[: block.shape[0], : block.shape[1]] = block[:tile, :tile]
            yield out


def write_pyramid_ometiff(
    path: str | os.PathLike,
    image,
    mpp: Optional[float] = None,
    tile: int = 256,
    n_levels: Optional[int] = None,
    compression: Optional[str] = "jpeg",
    reduce: str = "mean",
    min_size: int = 512,
) -> Path:
    """Write ``image`` [H, W] or [H, W, C] as a tiled OME-TIFF with a SubIFD pyramid.

    ``mpp`` (µm/px) goes into OME PhysicalSizeX/Y and the resolution tags; ``reduce`` is
    ``mean`` for images and ``nearest`` for labels; ``compression`` ``jpeg`` (RGB uint8 only),
    ``zlib`` or None.
    """
    import tifffile

    h, w = image.shape[:2]
    if n_levels is None:
        n_levels = _n_levels(h, w, tile, min_size)
    rgb = image.ndim == 3 and image.shape[2] == 3
    if compression == "jpeg" and not (rgb and np.dtype(image.dtype) == np.uint8):
        compression = "zlib"
    comp = None if compression is None else (("jpeg", 90) if compression == "jpeg" else ("zlib", 6))
    meta = {"axes": "YXS" if rgb else "YX"}
    res = {}
    if mpp:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeY=mpp, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    kw = dict(tile=(tile, tile), compression=comp[0] if comp else None,
              compressionargs=({"level": comp[1]} if comp else None),
              photometric="rgb" if rgb else "minisblack", dtype=image.dtype)

    def write(tmp: str) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            shape = tuple(image.shape)
            tif.write(_tiles(image, 1, tile, reduce), shape=shape, subifds=n_levels - 1,
                      metadata=meta, **res, **kw)
            for lv in range(1, n_levels):
                f = 2 ** lv
                lshape = (-(-h // f), -(-w // f)) + tuple(image.shape[2:])
                lres = {"resolution": (1e4 / (mpp * f), 1e4 / (mpp * f)), "resolutionunit": "CENTIMETER"} if mpp else {}
                tif.write(_tiles(image, f, tile, reduce), shape=lshape, subfiletype=1, metadata=None, **lres, **kw)

    return atomic_write(path, write, suffix=".ome.tif")


def write_labels_ometiff(path: str | os.PathLike, labels, mpp: Optional[float] = None, tile: int = 512,
                         max_id: Optional[int] = None) -> Path:
    """Instance labels [H, W] (0 = background; numpy, dask or zarr) as uint16 (ids < 65536) or
    uint32 tiled, zlib-compressed OME-TIFF, streamed tile by tile; large label images get a
    nearest-neighbour pyramid. ``max_id`` (the largest id) spares a pass over a large array."""
    import dask.array as da

    if not hasattr(labels, "shape"):
        labels = np.asarray(labels)
    if len(labels.shape) != 2:
        raise JobError(f"labels must be 2D (Y, X), got shape {tuple(labels.shape)}")
    lazy = labels if isinstance(labels, (np.ndarray, da.Array)) else da.from_array(labels, chunks=(2048, 2048))
    mx = int(np.asarray(lazy.max())) if max_id is None else int(max_id)
    dtype = np.uint16 if mx < 2 ** 16 else np.uint32
    arr = lazy.astype(dtype)
    h, w = arr.shape
    n_levels = _n_levels(h, w, tile, 4096) if max(h, w) > 4096 else 1
    return write_pyramid_ometiff(path, arr, mpp=mpp, tile=tile, n_levels=n_levels, compression="zlib", reduce="nearest")
