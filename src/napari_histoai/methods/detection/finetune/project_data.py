"""From a correction project (image + points + regions, level-0 px) to training data at the
model's resolution: the part of the image around the user's regions (``margin`` model px of
context, at most ``max_side`` px a side), resampled to the model's µm/px."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ....engine.resize import resize, scaled_shape
from ....errors import JobError
from .data import MixedImage, make_mixed_image

__all__ = ["training_area", "mixed_image_from", "mixed_image_from_project"]


def training_area(regions: dict, shape, scale: float, margin: int = 128, max_side: int = 3072):
    """(y0, x0, y1, x1) level-0 px: the bounding box of all regions grown by ``margin`` model px
    (``scale`` = level-0 px per model px), clamped to the image and to ``max_side`` model px."""
    polys = [np.asarray(p, float).reshape(-1, 2) for k in regions for p in regions[k] if len(p) >= 3]
    if not polys:
        raise JobError("mark at least one reviewed (or no-target) region before training")
    allv = np.concatenate(polys)
    h, w = int(shape[0]), int(shape[1])
    pad = margin * scale
    y0, x0 = allv.min(0) - pad
    y1, x1 = allv.max(0) + pad
    lim = max_side * scale
    if y1 - y0 > lim:
        c = (y0 + y1) / 2
        y0, y1 = c - lim / 2, c + lim / 2
    if x1 - x0 > lim:
        c = (x0 + x1) / 2
        x0, x1 = c - lim / 2, c + lim / 2
    y0, x0 = max(0, int(np.floor(y0))), max(0, int(np.floor(x0)))
    y1, x1 = min(h, int(np.ceil(y1))), min(w, int(np.ceil(x1)))
    if y1 - y0 < 8 or x1 - x0 < 8:
        raise JobError("the marked regions are outside the image")
    return y0, x0, y1, x1


def mixed_image_from(slide, yx, classes, sources, regions: dict, class_names, model_mpp: Optional[float],
                     name: str = "image", margin: int = 128, max_side: int = 3072,
                     image_mpp: Optional[float] = None) -> MixedImage:
    """A :class:`MixedImage` from a :class:`~napari_histoai.io.SlideImage`, points (level-0 px)
    and ``{"reviewed": [...], "no_target": [...]}`` polygons (level-0 px); ``image_mpp``
    overrides the file's µm/px (images without one are taken at the model's)."""
    slide.require_rgb8("training")
    src_mpp = image_mpp or slide.mpp
    scale = (model_mpp / src_mpp) if (model_mpp and src_mpp) else 1.0  # level-0 px per model px
    y0, x0, y1, x1 = training_area(regions, slide.shape[:2], scale, margin, max_side)
    level = slide.best_level_for_downsample(scale)
    ds = slide.downsamples[level]
    ly0, lx0 = int(y0 // ds), int(x0 // ds)
    ly1, lx1 = int(np.ceil(y1 / ds)), int(np.ceil(x1 / ds))
    lh, lw = slide.levels[level].shape[:2]
    ly1, lx1 = min(ly1, lh), min(lx1, lw)
    px = np.asarray(slide.read_region(ly0, lx0, ly1, lx1, level=level))[..., :3]
    px = resize(np.ascontiguousarray(px), scaled_shape(px.shape, ds / scale))
    # level-0 px -> model px of this area
    oy, ox = ly0 * ds, lx0 * ds
    fy = px.shape[0] / ((ly1 - ly0) * ds)
    fx = px.shape[1] / ((lx1 - lx0) * ds)

    def to_area(p):
        p = np.asarray(p, float).reshape(-1, 2)
        return np.stack([(p[:, 0] + 0.5 - oy) * fy - 0.5, (p[:, 1] + 0.5 - ox) * fx - 0.5], 1)

    item = make_mixed_image(name, px, to_area(yx), list(classes), class_names,
                            [to_area(p) for p in regions.get("reviewed", [])],
                            [to_area(p) for p in regions.get("no_target", [])], sources=list(sources))
    item.offset, item.scale = (oy, ox), 1.0 / fy
    return item


def mixed_image_from_project(project, class_names, model_mpp, margin: int = 128, max_side: int = 3072,
                             image_mpp: Optional[float] = None) -> MixedImage:
    """Open the project's image and build its training data (``image_mpp``: the image's µm/px
    when its file has none)."""
    from ....io import open_image

    if not project.image_path:
        raise JobError(f"project {project.root} does not say which image it belongs to")
    slide = open_image(project.image_path)
    pts = project.load_points()
    return mixed_image_from(slide, pts.yx, pts.classes, pts.sources, project.load_regions(), class_names,
                            model_mpp, name=project.root.name, margin=margin, max_side=max_side,
                            image_mpp=image_mpp)
