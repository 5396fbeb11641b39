"""The user-level jobs shared by the dock widget and ``histoai segment``.

* :func:`train_segmenter_job` - train on an image (whole, a region, or tissue tiles of a slide);
* :func:`segment_job` - a trained model -> instance labels, tiled through the engine;
* :func:`save_model` / :func:`load_model` - checkpoint folders (kind ``contrastive-segmenter``).

``image`` is anything :func:`as_slide` understands: a :class:`~napari_histoai.io.SlideImage`,
a numpy/dask RGB array [H, W, 3], or a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ...errors import JobError

from ...engine.jobs import Progress
from ...engine.tiling import LabelStitcher, tile_grid
from .network import build
from .postprocess import labels_from_confidence
from .predict import OVERLAP, confidence
from .train import KIND, ContrastiveConfig, TrainResult, train_job

WHOLE_IMAGE_MAX_PIXELS = 2048 * 2048  # larger images train on tissue tiles
LABEL_TILE = 1024


@dataclass
class SegmenterModel:
    """A ready-to-apply segmenter: network + the choices made on its confidence maps."""

    net: torch.nn.Module
    channel: int
    threshold: float = 0.5
    downsample: float = 1.0
    mpp: Optional[float] = None       # µm/px of the working resolution, when known
    config: Optional[dict] = None

    @classmethod
    def from_result(cls, res: TrainResult, mpp: Optional[float] = None) -> "SegmenterModel":
        ds = float(res.config.downsample)
        return cls(res.net, res.channel, res.config.threshold, ds, None if mpp is None else mpp * ds,
                   res.checkpoint()[1])

    def downsample_for(self, image_mpp: Optional[float]) -> float:
        """Input px per working px for an image of ``image_mpp`` µm/px."""
        if self.mpp and image_mpp:
            return float(self.mpp / image_mpp)
        return float(self.downsample)


def as_slide(image):
    from ...io import SlideImage, from_array

    if isinstance(image, SlideImage):
        slide = image
    elif isinstance(image, (str,)) or hasattr(image, "__fspath__"):
        from ...io import open_image

        slide = open_image(image)
    else:
        slide = from_array(image)
    slide.require_rgb8("the contrastive segmenter")
    return slide


def _region(slide, region) -> tuple[int, int, int, int]:
    H, W = slide.shape[:2]
    if region is None:
        return 0, 0, H, W
    y0, x0, y1, x1 = (int(round(v)) for v in region)
    y0, x0, y1, x1 = max(0, y0), max(0, x0), min(H, y1), min(W, x1)
    if y1 <= y0 or x1 <= x0:
        raise JobError(f"region {tuple(region)} is empty or outside the image ({H} x {W} px)")
    return y0, x0, y1, x1


def training_images(image, region=None, n_tiles: int = 8, tile: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """What to train on: the region (or whole image) when it is small enough, else ``n_tiles``
    random tissue tiles of side ``tile`` inside it."""
    slide = as_slide(image)
    y0, x0, y1, x1 = _region(slide, region)
    if (y1 - y0) * (x1 - x0) <= WHOLE_IMAGE_MAX_PIXELS:
        return [slide.read_region(y0, x0, y1, x1)[..., :3]]
    from ...engine.tissue import tile_has_tissue, tissue_mask

    mask, ds = tissue_mask(slide)
    cands = [t for t in tile_grid(slide.shape, tile=tile, overlap=0, region=(y0, x0, y1, x1))
             if tile_has_tissue(mask, ds, t.y0, t.x0, t.y1, t.x1, min_fraction=0.5)]
    if not cands:
        raise JobError("no tissue found in the image/region to train on")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(cands), size=min(n_tiles, len(cands)), replace=False)
    return [slide.read_region(cands[i].y0, cands[i].x0, cands[i].y1, cands[i].x1)[..., :3] for i in sorted(pick)]


PREVIEW_MAX = 1024


def preview_box(image, region=None, size: int = PREVIEW_MAX) -> tuple[int, int, int, int]:
    """The part of ``region`` shown live during training: all of it up to ``size`` px a side,
    else its central ``size`` x ``size`` window. (y0, x0, y1, x1) level-0 px."""
    slide = as_slide(image)
    y0, x0, y1, x1 = _region(slide, region)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    h, w = min(size, y1 - y0), min(size, x1 - x0)
    py0, px0 = max(y0, cy - h // 2), max(x0, cx - w // 2)
    return py0, px0, py0 + h, px0 + w


def train_segmenter_job(image, config: Optional[ContrastiveConfig] = None, region=None,
                        masks: Optional[Sequence[np.ndarray]] = None, device=None, n_tiles: int = 8,
                        preview: bool = False):
    """Job: train on ``image`` (or ``region`` = (y0, x0, y1, x1) of it); returns a TrainResult.

    ``masks``: optional ground truth for each training image (selection by Dice). With
    ``preview`` the progress carries the live confidence maps of :func:`preview_box` and the
    result gets ``preview_maps`` [K, h, w] (final model) and ``preview_box``.
    """
    cfg = config or ContrastiveConfig()
    yield Progress(0, cfg.steps * cfg.restarts, "reading the image")
    slide = as_slide(image)
    imgs = training_images(slide, region, n_tiles=n_tiles, seed=cfg.seed)
    pv = box = None
    if preview:
        box = preview_box(slide, region)
        pv = slide.read_region(*box)[..., :3]
    result = yield from train_job(imgs, cfg, masks=masks, device=device, preview=pv)
    result.preview_box = box
    result.preview_maps = None if pv is None else confidence(result.net, pv, device=device, downsample=cfg.downsample)
    if pv is not None:
        from .postprocess import suggest_channel

        result.channel = suggest_channel(result.preview_maps, pv, cfg.threshold) if masks is None else result.channel
    return result


def segment_job(model: SegmenterModel, image, region=None, channel: Optional[int] = None,
                threshold: Optional[float] = None, min_distance: int = 5, min_size: int = 20,
                image_mpp: Optional[float] = None, device=None, tissue_only: bool = True):
    """Job: instance labels (uint32 [h, w], the region's frame) of ``image``, tiled and stitched.

    ``threshold``: a number, "auto" (Otsu of the first tile's map, then kept for all tiles) or
    None (the model's own threshold).

    Tiles of ``LABEL_TILE`` px overlap by 192 px (more than the network's context and than a
    nucleus), so the stitched labels equal a single pass up to seams handled by the engine.
    """
    slide = as_slide(image)
    y0, x0, y1, x1 = _region(slide, region)
    k = model.channel if channel is None else int(channel)
    thr = model.threshold if threshold is None else threshold  # a number or "auto" (Otsu)
    n_out = model.net.head.out_channels
    if not 0 <= k < n_out:
        raise JobError(f"channel {k} does not exist (the model has {n_out} channels)")
    ds = model.downsample_for(image_mpp if image_mpp is not None else slide.mpp)
    if device is not None:
        model.net.to(device)
    tiles = tile_grid(slide.shape, tile=LABEL_TILE, overlap=OVERLAP, region=(y0, x0, y1, x1))
    mask = None
    if tissue_only and len(tiles) > 4:
        from ...engine.tissue import tissue_mask

        mask = tissue_mask(slide)
    out = np.zeros((y1 - y0, x1 - x0), np.uint32)
    stitch = LabelStitcher(out)
    n = 0
    for i, t in enumerate(tiles):
        yield Progress(i, len(tiles), f"tile {i + 1}/{len(tiles)}: {n} nuclei")
        if mask is not None:
            from ...engine.tissue import tile_has_tissue

            if not tile_has_tissue(mask[0], mask[1], t.y0, t.x0, t.y1, t.x1):
                continue
        rgb = slide.read_region(t.y0, t.x0, t.y1, t.x1)[..., :3]
        conf = confidence(model.net, rgb, downsample=ds)
        if isinstance(thr, str) or thr is None:  # "auto": Otsu on the first tile with tissue, then fixed
            from .postprocess import resolve_threshold

            thr = resolve_threshold(conf[k], thr)
        labels = labels_from_confidence(conf[k], thr, min_distance=min_distance, min_size=min_size)
        local = type(t)(t.y0 - y0, t.x0 - x0, t.y1 - y0, t.x1 - x0, t.cy0 - y0, t.cx0 - x0, t.cy1 - y0, t.cx1 - x0, t.index)
        n += stitch.add(local, labels)
    yield Progress(len(tiles), len(tiles), f"{n} nuclei")
    return out


def save_model(result: TrainResult, folder, mpp: Optional[float] = None, name: str = ""):
    """Save a trained segmenter as a model folder; returns its path."""
    from ...models import save_checkpoint

    state, cfg = result.checkpoint()
    cfg["mpp"] = None if mpp is None else float(mpp) * float(result.config.downsample)
    if name:
        cfg["name"] = name
    return save_checkpoint(folder, state, cfg)


def load_model(name_or_path) -> SegmenterModel:
    """A :class:`SegmenterModel` from a saved model folder (bundled/user name or path)."""
    from ...models import load_checkpoint, load_state_strict

    state, cfg = load_checkpoint(name_or_path, kind=KIND)
    net, _ = build(cfg.get("architecture", {}))
    load_state_strict(net, {k[4:]: v for k, v in state.items() if k.startswith("net.")}, "contrastive segmenter")
    net.eval()
    thr = cfg.get("threshold", 0.5)
    return SegmenterModel(net, int(cfg.get("nuclei_channel", 0)), thr if isinstance(thr, str) else float(thr),
                          float(cfg.get("downsample", 1.0)), cfg.get("mpp"), cfg)
