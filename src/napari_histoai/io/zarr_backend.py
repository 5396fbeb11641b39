"""OME-Zarr (NGFF 0.4 and 0.5) multiscale images."""

from __future__ import annotations

from pathlib import Path

from .image import SlideImage, magnification_from_mpp


def open_ome_zarr(path: Path) -> SlideImage:
    import dask.array as da
    import zarr

    root = zarr.open(str(path), mode="r")
    if hasattr(root, "shape"):  # a bare array
        arr = da.from_zarr(root)
        arr = arr if arr.ndim == 3 else arr[..., None]
        return SlideImage(path=path, levels=[arr], backend="ome-zarr", format="zarr")
    attrs = dict(root.attrs)
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not ms:
        raise ValueError("not an OME-Zarr image (no 'multiscales' metadata)")
    ms = ms[0]
    axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", ["y", "x"])]
    levels, mpp = [], None
    for i, ds in enumerate(ms["datasets"]):
        arr = da.from_zarr(root[ds["path"]])
        idx = tuple(slice(None) if a in ("y", "x", "c") else 0 for a in axes)
        arr = arr[idx]
        kept = [a for a in axes if a in ("y", "x", "c")]
        if "c" not in kept:
            arr = arr[..., None]
            kept.append("c")
        arr = arr.transpose([kept.index("y"), kept.index("x"), kept.index("c")])
        levels.append(arr)
        if i == 0:
            for t in ds.get("coordinateTransformations", []):
                if t.get("type") == "scale":
                    x_ax = axes.index("x")
                    unit = next((a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict) and a.get("name") == "x"), "micrometer")
                    factor = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3}.get(unit or "micrometer", 1.0)
                    mpp = float(t["scale"][x_ax]) * factor
    return SlideImage(path=path, levels=levels, mpp=mpp, magnification=magnification_from_mpp(mpp),
                      backend="ome-zarr", format="ome-zarr")
