"""Whole-slide instance labels as a pyramid a viewer can pan and zoom: an OME-Zarr group (NGFF
0.4, zarr format 2) whose level 0 is the labels (e.g. the zarr array the engine streamed a
whole-slide segmentation into) and whose levels 1.. are nearest-neighbour halvings (ids kept,
never averaged), each chunked ``chunk`` x ``chunk``, written level by level with dask so the
labels never have to fit in memory. The group is written under a temporary name and renamed into
place. Nothing here needs Qt."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Optional

from ..errors import JobError

__all__ = ["write_label_pyramid", "open_label_pyramid"]


def write_label_pyramid(path: str | os.PathLike, labels, mpp: Optional[float] = None, chunk: int = 1024,
                        min_size: int = 1024) -> Path:
    """Write ``labels`` [H, W] (numpy, dask or zarr; integer ids, 0 = background) as a labels
    pyramid at ``path`` (a ``.zarr`` folder); ``mpp`` (µm per level-0 px) goes into the
    coordinate transformations. Levels halve until the longest side is <= ``min_size``."""
    import dask.array as da
    import zarr

    if len(getattr(labels, "shape", ())) != 2:
        raise JobError(f"labels must be 2D (Y, X), got shape {tuple(getattr(labels, 'shape', ()))}")
    if getattr(labels, "dtype", None) is None or labels.dtype.kind not in "iu":
        raise JobError("labels must hold integer ids")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    lvl = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=(chunk, chunk))
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        datasets, i = [], 0
        while True:
            lvl = lvl.rechunk((chunk, chunk))
            arr = root.create_array(str(i), shape=lvl.shape, chunks=(chunk, chunk), dtype=lvl.dtype, fill_value=0)
            da.store(lvl, arr, lock=False)
            s = (mpp or 1.0) * 2 ** i
            datasets.append({"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [s, s]}]})
            if max(lvl.shape) <= min_size:
                break
            lvl = da.from_zarr(arr)[::2, ::2]
            i += 1
        unit = "micrometer" if mpp else None
        axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in ("y", "x")]
        root.attrs["multiscales"] = [{"version": "0.4", "name": path.stem, "axes": axes, "datasets": datasets,
                                      "type": "nearest"}]
        root.attrs["histoai"] = {"kind": "instance labels", "mpp": mpp}
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def open_label_pyramid(path: str | os.PathLike) -> tuple[list, Optional[float]]:
    """(levels: list of dask arrays [h, w], largest first; mpp or None) of a labels pyramid."""
    import dask.array as da
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r")
        ms = root.attrs.get("multiscales") or root.attrs.get("ome", {}).get("multiscales")
        levels = [da.from_zarr(root[d["path"]]) for d in ms[0]["datasets"]]
    except (OSError, KeyError, TypeError, IndexError, ValueError) as e:
        raise JobError(f"{path} is not a labels pyramid: {e}") from None
    mpp = (root.attrs.get("histoai") or {}).get("mpp")
    return levels, mpp
