"""One job for the dock, the CLI and the batch runner: train the self-trained segmenter on an
image (or a region of it) and segment it with the engine."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ...engine.jobs import Progress
from ...errors import CancelFlag, JobError
from .config import SelfTrainConfig
from .model import SelfTrainedSegmenter

__all__ = ["working_images", "train_on_image_job", "segment_image_job"]


def working_images(slide, region=None, cfg: Optional[SelfTrainConfig] = None, image_mpp: Optional[float] = None,
                   n_tiles: int = 8, tile: int = 1000) -> list[np.ndarray]:
    """Training images at ``cfg.mpp``: the region (or image) when small enough, else ``n_tiles``
    tissue tiles of ``tile`` level-0 px (see contrastive.job.training_images), resampled."""
    from ...engine.resize import resize, scaled_shape
    from ..contrastive.job import training_images

    cfg = cfg or SelfTrainConfig()
    mpp = image_mpp or slide.mpp
    if not mpp:
        raise JobError("the image has no pixel size: give its µm/px (--mpp, or the dock's pixel size)")
    f = float(mpp) / cfg.mpp
    return [resize(im, scaled_shape(im.shape[:2], f)) for im in training_images(slide, region, n_tiles=n_tiles,
                                                                                  tile=tile, seed=cfg.seed)]


def train_on_image_job(image, config: Optional[SelfTrainConfig] = None, region=None, mpp: Optional[float] = None,
                       device="cpu", cancel: Optional[CancelFlag] = None):
    """Job: a :class:`SelfTrainedSegmenter` trained on ``image`` (path, SlideImage or RGB array;
    ``mpp`` its µm/px when the file has none). The caller's image is left as it was."""
    from ...engine.inference import as_image
    from .train import train_selftrain_job

    cfg = (config or SelfTrainConfig()).validate()
    yield Progress(0, cfg.steps, "reading the image")
    slide, opened = as_image(image, mpp=mpp)
    try:
        slide.require_rgb8("the segmenter")
        imgs = working_images(slide, region, cfg, mpp)
    finally:
        if opened:
            slide.close()
    net = yield from train_selftrain_job(imgs, cfg, device=device, cancel=cancel)
    return SelfTrainedSegmenter(net, cfg, device=device)


def segment_image_job(image, model: Optional[SelfTrainedSegmenter] = None, config: Optional[SelfTrainConfig] = None,
                      region=None, mpp: Optional[float] = None, device="cpu", tissue_only: bool = True, store=None,
                      cancel: Optional[CancelFlag] = None):
    """Job: train on ``image`` (unless ``model`` is given), then instance labels of ``region``
    (level-0 px) by the engine. Returns (LabelsResult, model)."""
    from ...engine.inference import infer

    if model is None:
        model = yield from train_on_image_job(image, config, region, mpp, device, cancel)
    result = yield from infer(image, model, region, mpp=mpp, tissue_only=tissue_only, store=store, cancel=cancel)
    yield Progress(result.n_tiles, result.n_tiles, f"{result.n_objects} nuclei")
    return result, model
