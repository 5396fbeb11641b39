"""How the 'Segment nuclei' dock shows a segmentation's instance labels: one Labels layer, or, for
a whole slide (labels the engine streamed to a temporary zarr store, longest side over
``io.label_pyramid.PYRAMID_MIN_SIDE``), napari's multiscale Labels from a nearest-neighbour
pyramid built in the job's worker thread next to that store (so it goes with the store when the
layer is removed). A single-scale Labels layer of a whole slide would read the whole labels
array whenever the view is zoomed out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ._layers import placement


def with_label_pyramid(job, found: dict):
    """Job: run ``job`` (it returns a LabelsResult, or a tuple whose first item is one), then, for
    a whole slide's streamed labels, write their pyramid (``<store>.pyramid.zarr``) and put its
    path in ``found["pyramid"]`` (None otherwise). Returns what ``job`` returned."""
    from ..engine.jobs import Progress
    from ..io.label_pyramid import needs_pyramid, write_label_pyramid

    out = yield from job
    result = out[0] if isinstance(out, tuple) else out
    found["pyramid"] = None
    store = getattr(result, "store", None)
    if store is not None and needs_pyramid(result.labels.shape):
        yield Progress(0, 1, "Building the labels pyramid for viewing…")
        mpp = None if result.mpp is None else result.mpp * result.downsample
        found["pyramid"] = write_label_pyramid(Path(store).with_name(Path(store).stem + ".pyramid.zarr"),
                                               result.labels, mpp=mpp, origin=result.origin,
                                               downsample=result.downsample)
        yield Progress(1, 1, "Labels pyramid written")
    return out


def add_labels_result(viewer, result, image_layer, name: str, metadata: dict, pyramid: Optional[Path] = None):
    """The Labels layer of a LabelsResult, aligned with ``image_layer``: multiscale from
    ``pyramid`` when there is one, else the result's labels."""
    if pyramid is not None:
        from ._lod import add_label_pyramid

        return add_label_pyramid(viewer, pyramid, image_layer, name=name, metadata=metadata)
    return viewer.add_labels(result.labels, name=name, metadata=metadata,
                             **placement(image_layer, result.origin, result.downsample))
