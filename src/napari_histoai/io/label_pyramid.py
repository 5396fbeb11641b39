"""Whole-slide instance labels as a pyramid a viewer can pan and zoom: an OME-Zarr group (NGFF
0.4, zarr format 2) whose level 0 is the labels (e.g. the zarr array the engine streamed a
whole-slide segmentation into) and whose levels 1.. are nearest-neighbour halvings (level k is
level 0 at every 2**k-th pixel: ids kept, never averaged or invented), each chunked ``chunk`` x
``chunk``, written level by level with dask so the labels never have to fit in memory. The group
is written under a temporary name and renamed into place. Nothing here needs Qt.

Where the labels lie on the slide is kept with them (attribute ``histoai``): ``mpp`` (µm per
level-0 label px), ``origin`` (y, x: the slide's level-0 px of the first label px's corner) and
``downsample`` (slide level-0 px per label px), as the engine's ``LabelsResult`` has them."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Optional, Sequence

from ..errors import JobError

__all__ = ["write_label_pyramid", "open_label_pyramid", "label_pyramid_info", "needs_pyramid", "pyramid_path_for",
           "is_label_pyramid", "PYRAMID_MIN_SIDE", "PYRAMID_TOP_SIDE"]

PYRAMID_MIN_SIDE = 4096  # labels with a longer side (px) get a pyramid for viewing (napari draws one level)
PYRAMID_TOP_SIDE = 1024  # levels halve until the longest side is at most this (px)
KIND = "instance labels"


def needs_pyramid(shape: Sequence[int]) -> bool:
    """Whether labels of ``shape`` (H, W) are large enough to be viewed through a pyramid."""
    return max(int(s) for s in shape[-2:]) > PYRAMID_MIN_SIDE


def pyramid_path_for(out: str | os.PathLike) -> Path:
    """The pyramid written next to a labels file: ``nuclei.tif`` / ``nuclei.ome.tif`` ->
    ``nuclei.pyramid.zarr`` (never the name of an input slide such as ``nuclei.zarr``)."""
    out = Path(out)
    name = out.name
    for suffix in (".tiff", ".tif", ".ome"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return out.with_name(f"{name}.pyramid.zarr")


def is_label_pyramid(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a labels pyramid this module wrote (safe to replace)."""
    import zarr

    try:
        return (zarr.open_group(str(path), mode="r").attrs.get("histoai") or {}).get("kind") == KIND
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def write_label_pyramid(path: str | os.PathLike, labels, mpp: Optional[float] = None, chunk: int = 1024,
                        min_size: Optional[int] = None, origin: Sequence[float] = (0.0, 0.0),
                        downsample: float = 1.0) -> Path:
    """Write ``labels`` [H, W] (numpy, dask or zarr; integer ids, 0 = background) as a labels
    pyramid at ``path`` (a ``.zarr`` folder); ``mpp`` (µm per level-0 px) goes into the
    coordinate transformations. Levels halve until the longest side is <= ``min_size``
    (default :data:`PYRAMID_TOP_SIDE`). ``origin`` / ``downsample``: where the labels lie on
    their slide (see the module docstring). An existing folder at ``path`` is replaced only when
    it is such a pyramid (``JobError`` otherwise)."""
    import dask.array as da
    import zarr

    if len(getattr(labels, "shape", ())) != 2:
        raise JobError(f"labels must be 2D (Y, X), got shape {tuple(getattr(labels, 'shape', ()))}")
    if getattr(labels, "dtype", None) is None or labels.dtype.kind not in "iu":
        raise JobError("labels must hold integer ids")
    min_size = PYRAMID_TOP_SIDE if min_size is None else int(min_size)
    path = Path(path)
    if path.exists() and not is_label_pyramid(path):
        raise JobError(f"{path} exists and is not a labels pyramid; not replacing it")
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
        root.attrs["histoai"] = {"kind": KIND, "mpp": mpp, "origin": [float(v) for v in origin],
                                 "downsample": float(downsample)}
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


def label_pyramid_info(path: str | os.PathLike) -> dict:
    """{mpp, origin (y, x), downsample} of a labels pyramid (defaults for one written elsewhere:
    mpp None, origin (0, 0), downsample 1)."""
    import zarr

    try:
        h = zarr.open_group(str(path), mode="r").attrs.get("histoai") or {}
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise JobError(f"{path} is not a labels pyramid: {e}") from None
    return {"mpp": h.get("mpp"), "origin": tuple(float(v) for v in h.get("origin", (0.0, 0.0))),
            "downsample": float(h.get("downsample", 1.0))}
