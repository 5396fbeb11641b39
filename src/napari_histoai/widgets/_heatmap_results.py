"""Results of the 'Tumour heatmap' dock: the job that loads a model and makes one slide's
heatmap, the heatmap Image layer and the top-K Shapes layer (both aligned with the slide in µm),
and the camera stepping through the top-K boxes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..engine.jobs import Progress
from ._heatmap_sources import OUTPUT_KEY
from ._layers import placement

BOX_COLOUR = "#00e5ff"
HEATMAP_COLORMAP = "tumour (inferno)"
CLEAR_BELOW, OPAQUE_FROM = 0.2, 0.6  # tumour probability where the colour starts to show / is fully shown
BOX_EDGE_UM = 3.0  # drawn edge width of a top-K box (µm)


def heatmap_layer_job(image, model: str, device: str = "auto", mpp: Optional[float] = None):
    """Job: load the heatmap ``model`` (name or folder) and make the heatmap of ``image`` (a path
    or SlideImage); returns a HeatmapResult."""
    from ..engine.devices import pick_device
    from ..methods.heatmap import heatmap_job, load_heatmap_model

    yield Progress(0, 0, f"loading the model {model}")
    net = load_heatmap_model(model, device=pick_device(device))
    return (yield from heatmap_job(image, net, mpp=mpp))


def _plane(maps):
    """The tumour plane [H, W] of maps [1, H, W]: numpy as is, a zarr store read lazily."""
    if isinstance(maps, np.ndarray):
        return maps[0]
    import dask.array as da

    return da.from_array(maps, chunks=(1, 1024, 1024))[0]


def heatmap_colormap():
    """Inferno whose low end is transparent: the slide stays visible where the map says 'not
    tumour' (probability below 0.2), the colour builds up to full strength at 0.6."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    x = np.linspace(0.0, 1.0, 256)
    rgba = np.array(ensure_colormap("inferno").map(x), np.float32)
    rgba[:, 3] = np.clip((x - CLEAR_BELOW) / (OPAQUE_FROM - CLEAR_BELOW), 0.0, 1.0)
    return Colormap(rgba, controls=x, name=HEATMAP_COLORMAP)


def heatmap_layer_kwargs(result, image_layer, name: str) -> dict:
    """``viewer.add_image`` kwargs of a heatmap: map pixel (i, j) covers level-0 px
    origin + [i, i+1) * downsample of ``image_layer`` (placement does the half-pixel bookkeeping)."""
    m = result.maps
    md = {OUTPUT_KEY: True, "histoai_store": None if m.store is None else str(m.store),
          "mpp": None if m.mpp is None else m.mpp * m.downsample, "score": result.score, "call": result.call,
          "threshold": result.threshold, "model": m.model}
    return dict(data=_plane(m.maps), name=name, colormap=heatmap_colormap(), opacity=0.6,
                contrast_limits=(0.0, 1.0), blending="translucent", metadata=md,
                **placement(image_layer, m.origin, m.downsample))


def box_vertices(top_k: list) -> list[np.ndarray]:
    """Rectangles [4, 2] in napari data px of the slide from level-0 px boxes (corner
    convention: level-0 px k is centred on napari index k, hence -0.5)."""
    out = []
    for b in top_k:
        y0, x0, y1, x1 = (b[k] - 0.5 for k in ("y0", "x0", "y1", "x1"))
        out.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float))
    return out


def topk_layer_kwargs(result, image_layer, name: str) -> dict:
    """``viewer.add_shapes`` kwargs of the top-K boxes (rank, ``prob`` = stage-2 probability,
    ``max_prob`` = the map's maximum in the box), aligned with ``image_layer``."""
    top = result.top_k
    mpp = result.maps.mpp
    feats = pd.DataFrame({"rank": np.arange(1, len(top) + 1), "prob": [float(b["prob"]) for b in top],
                          "max_prob": [float(b["max_prob"]) for b in top]})
    return dict(data=box_vertices(top), shape_type="rectangle", name=name, features=feats,
                edge_color=BOX_COLOUR, face_color="transparent", edge_width=BOX_EDGE_UM / mpp if mpp else 6.0,
                text={"string": "{rank}: {prob:.2f}", "color": BOX_COLOUR, "anchor": "upper_left", "size": 9},
                metadata={OUTPUT_KEY: True}, **placement(image_layer))


def box_world(shapes, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre (y, x), size (h, w)) of box ``i`` of a top-K Shapes layer in world units."""
    v = np.array([shapes.data_to_world(p)[-2:] for p in np.asarray(shapes.data[i])])
    lo, hi = v.min(0), v.max(0)
    return (lo + hi) / 2, hi - lo


def focus_box(viewer, shapes, i: int, fill: float = 0.5) -> None:
    """Select box ``i`` and centre the camera on it, zoomed so it fills ``fill`` of the canvas."""
    centre, size = box_world(shapes, i)
    viewer.layers.selection.active = shapes
    shapes.mode = "select"
    shapes.selected_data = {i}
    canvas = viewer.canvas.size if hasattr(viewer, "canvas") else (600, 800)  # (h, w) screen px
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = tuple(float(c) for c in centre)
    camera.zoom = float(fill * min(canvas[-2] / max(size[0], 1e-9), canvas[-1] / max(size[1], 1e-9)))


def drop_temporary_store(event) -> None:
    """A removed heatmap layer whose map lived in a temporary zarr store takes its store with it."""
    md = getattr(event.value, "metadata", None) or {}
    store = md.get("histoai_store") if md.get(OUTPUT_KEY) else None
    if store and Path(store).parent.name.startswith("histoai-"):
        shutil.rmtree(Path(store).parent, ignore_errors=True)


def score_text(result, model: str) -> str:
    m = result.maps
    res = "" if m.mpp is None else f" at {m.mpp * m.downsample:g} µm/px"
    txt = (f"<b>{result.call}</b>: slide score {result.score:.3f} (threshold {result.threshold:.3f}, "
           f"model {model})<br>heatmap {m.maps.shape[-2]} x {m.maps.shape[-1]} px{res}; slide {m.mpp_text}; "
           f"{len(result.top_k)} top patches")
    return txt + "".join(f"<br>Note: {n}" for n in m.notes)
