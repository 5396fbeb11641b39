"""TIFF family (TIFF, OME-TIFF with SubIFD pyramids, SVS, NDPI, ...) via tifffile -> zarr -> dask."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

import numpy as np

from .image import SlideImage, magnification_from_mpp

# microscopy resolutions we believe (µm/px); 72-dpi defaults from generic writers are not
_MPP_RANGE = (0.01, 50.0)


def _plausible(mpp: Optional[float]) -> Optional[float]:
    if mpp is None or not np.isfinite(mpp):
        return None
    return float(mpp) if _MPP_RANGE[0] <= mpp <= _MPP_RANGE[1] else None


def _svs_meta(desc: str) -> tuple[Optional[float], Optional[float]]:
    mpp = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", desc)
    mag = re.search(r"AppMag\s*=\s*([0-9.]+)", desc)
    return (float(mpp.group(1)) if mpp else None, float(mag.group(1)) if mag else None)


_UNIT_TO_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}


def _ome_meta(xml: str) -> tuple[Optional[float], Optional[float]]:
    m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml)
    mpp = None
    if m:
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
        mpp = float(m.group(1)) * _UNIT_TO_UM.get(unit.group(1) if unit else "µm", 1.0)
    mag = re.search(r'NominalMagnification="([0-9.]+)"', xml)
    return mpp, (float(mag.group(1)) if mag else None)


def _resolution_mpp(page) -> Optional[float]:
    try:
        xres = page.tags.get("XResolution")
        unit = page.tags.get("ResolutionUnit")
        if xres is None or unit is None:
            return None
        num, den = xres.value
        per_unit = num / den if den else 0
        if per_unit <= 0:
            return None
        u = int(unit.value)
        if u == 3:  # centimetre
            return 1e4 / per_unit
        if u == 2:  # inch
            return 25400 / per_unit
    except Exception:
        return None
    return None


def _to_yxc(arr, axes: str):
    """Reorder a dask array with tifffile ``axes`` into (Y, X, C); other axes take index 0."""
    import dask.array as da

    idx = []
    keep = []
    for i, a in enumerate(axes):
        if a in "YXSC":
            idx.append(slice(None))
            keep.append(a)
        else:
            idx.append(0)
    arr = arr[tuple(idx)]
    chan = "S" if "S" in keep else ("C" if "C" in keep else None)
    if chan is None:
        arr = arr[..., None]
        keep.append("S")
        chan = "S"
    elif "S" in keep and "C" in keep:  # keep samples, first plane of channels
        arr = da.take(arr, 0, axis=keep.index("C"))
        keep.remove("C")
    order = [keep.index("Y"), keep.index("X"), keep.index(chan)]
    return arr.transpose(order)


def open_tiff(path: Path) -> SlideImage:
    import dask.array as da
    import tifffile
    import zarr

    logging.getLogger("tifffile").setLevel(logging.ERROR)  # we report one line ourselves
    tf = tifffile.TiffFile(str(path))
    try:
        if not tf.series:
            raise ValueError("no image series in file")
        series = tf.series[0]
        axes = series.axes
        if "Y" not in axes or "X" not in axes:
            raise ValueError(f"unsupported axes {axes!r}")
        store = series.aszarr()
        z = zarr.open(store, mode="r")
        if hasattr(z, "shape"):
            arrays = [z]
        else:
            arrays = [z[str(i)] for i in range(len(series.levels))]
        levels = [_to_yxc(da.from_zarr(a), axes) for a in arrays]
        mpp = mag = None
        page0 = tf.pages[0]
        if tf.is_svs:
            mpp, mag = _svs_meta(page0.description or "")
        elif tf.is_ome and tf.ome_metadata:
            mpp, mag = _ome_meta(tf.ome_metadata)
        if mpp is None:
            mpp = _resolution_mpp(page0)
        mpp = _plausible(mpp)
        if mag is None and mpp is not None:
            mag = magnification_from_mpp(mpp)
        fmt = "svs" if tf.is_svs else ("ome-tiff" if tf.is_ome else ("ndpi" if tf.is_ndpi else "tiff"))
    except Exception:
        tf.close()
        raise
    img = SlideImage(path=path, levels=levels, mpp=mpp, magnification=mag, backend="tifffile",
                     format=fmt, _close=tf.close)
    return img
