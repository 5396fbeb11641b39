"""Glue between napari layers and the library: image layer -> image source, view/shapes ->
regions, results -> layer kwargs placed on the image (scale, translate and units of the image
layer, so napari never mixes unit-less layers with µm ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd  # here, not at the first result: importing it takes ~0.3 s of the GUI thread

from ..classes import color_map
from ..errors import JobError

POINT_DIAMETER_UM = 5.0  # drawn size of a nucleus marker (µm)


def layer_mpp(layer) -> Optional[float]:
    """µm per level-0 pixel of an image layer (from our reader's metadata or a µm scale)."""
    md = getattr(layer, "metadata", {}) or {}
    if md.get("mpp"):
        return float(md["mpp"])
    units = [str(u) for u in getattr(layer, "units", ())]
    if units and all(u in ("µm", "um", "micrometer", "micron") for u in units[-2:]):
        s = float(layer.scale[-1])
        return s if s != 1.0 else None
    return None


def image_source(layer):
    """What a job opens in its worker thread for an Image layer: the file path when our reader
    opened it (cheap here: nothing is read), else a SlideImage wrapped around the layer's
    (multiscale) data."""
    from ..io import from_array

    md = getattr(layer, "metadata", {}) or {}
    path = md.get("histoai_path")
    if path and Path(path).exists():
        return path
    data = list(layer.data) if getattr(layer, "multiscale", False) else layer.data
    return from_array(data, mpp=layer_mpp(layer), name=layer.name)


def placement(image_layer, origin=(0.0, 0.0), downsample: float = 1.0) -> dict:
    """``scale``, ``translate`` and ``units`` for a layer on a grid of ``downsample`` image px
    per pixel whose top-left corner is at image px ``origin`` (y, x), aligned with
    ``image_layer``."""
    scale = np.asarray(image_layer.scale[-2:], float)
    corner = np.asarray(origin, float) + (downsample - 1) / 2.0  # centre of the first output pixel
    kw = {"scale": tuple(scale * downsample), "translate": tuple(np.asarray(image_layer.translate[-2:]) + corner * scale)}
    units = getattr(image_layer, "units", None)
    if units is not None:
        kw["units"] = tuple(units[-2:])
    return kw


def layer_shape(layer) -> tuple[int, int]:
    """(H, W) of an image layer's full-resolution data."""
    shape = layer.level_shapes[0] if getattr(layer, "multiscale", False) else layer.data.shape
    return int(shape[0]), int(shape[1])


def visible_region(viewer, layer) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) level-0 px of ``layer`` currently visible in the canvas."""
    h_px, w_px = viewer.window._qt_viewer.canvas.size if viewer.window is not None else (512, 512)
    scene = getattr(viewer, "scene", None)
    camera = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
    zoom = camera.zoom
    cy, cx = camera.center[-2:]
    half_h, half_w = h_px / zoom / 2, w_px / zoom / 2
    corners = np.array([[cy - half_h, cx - half_w], [cy + half_h, cx + half_w]])
    d = np.array([layer.world_to_data(c)[-2:] for c in corners])
    shape = layer_shape(layer)
    y0, x0 = np.floor(d.min(0)).astype(int)
    y1, x1 = np.ceil(d.max(0)).astype(int)
    y0, x0 = max(0, y0), max(0, x0)
    y1, x1 = min(int(shape[0]), y1), min(int(shape[1]), x1)
    if y1 <= y0 or x1 <= x0:
        raise JobError("the image is not in view; pan to it or choose 'Whole image'")
    return int(y0), int(x0), int(y1), int(x1)


def shapes_polygons(shapes_layer, image_layer) -> list[np.ndarray]:
    """The shapes (selected ones if any) as polygons [K, 2] in the image's level-0 px."""
    idx = sorted(shapes_layer.selected_data) or list(range(len(shapes_layer.data)))
    if not idx:
        raise JobError(f"the shapes layer {shapes_layer.name!r} is empty; draw a region first")
    polys = []
    for i in idx:
        world = np.array([shapes_layer.data_to_world(v) for v in shapes_layer.data[i]])
        polys.append(np.array([image_layer.world_to_data(w)[-2:] for w in world]))
    return polys


def points_layer_kwargs(result, image_layer, name: str = "nuclei") -> dict:
    """Kwargs for ``viewer.add_points`` from a PointsResult, aligned with ``image_layer``."""

    classes = list(result.classes)
    cats = pd.Categorical([classes[i] for i in result.class_ids], categories=classes)
    mpp = result.mpp or layer_mpp(image_layer)
    size = POINT_DIAMETER_UM / mpp if mpp else 12.0
    kw = dict(
        name=name,
        features=pd.DataFrame({"class": cats, "score": np.asarray(result.scores, float),
                               "source": pd.Categorical(["model"] * len(result.points), categories=["model", "user"])}),
        face_color="class",
        face_color_cycle={c: (*rgb, 1.0) for c, rgb in color_map(classes).items()},
        border_color="black",
        border_width=0.05,
        size=size,
        metadata={"mpp": mpp, "mpp_source": result.mpp_source, "model": result.model, "classes": classes},
        **placement(image_layer),
    )
    return kw
