"""The user-level jobs shared by the dock widget and ``histoai segment``.

* :func:`train_segmenter_job` - train on an image (whole, a region, or tissue tiles of a slide);
* :func:`segment_job` - a trained model -> instance labels, run by the engine's ``infer``
  (tiles, tissue only, seam-safe ids, streamed to a zarr store for whole slides);
* :func:`save_model` / :func:`load_model` - checkpoint folders (kind ``contrastive-segmenter``).

``image`` is anything :func:`as_slide` understands: a :class:`~napari_histoai.io.SlideImage`,
a numpy/dask RGB array [H, W, 3], or a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ...engine.inference import check_region, infer
from ...engine.jobs import Progress
from ...errors import JobError
from .network import build
from .predict import ContrastiveSegmenter, confidence
from .train import KIND, ContrastiveConfig, TrainResult, train_job

WHOLE_IMAGE_MAX_PIXELS = 2048 * 2048  # larger images train on tissue tiles


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


def as_slide(image):
    """A SlideImage of 8-bit RGB from a SlideImage, a path or an array (one-line errors)."""
    from ...engine.inference import as_image

    slide, _ = as_image(image)
    slide.require_rgb8("the contrastive segmenter")
    return slide


def training_images(image, region=None, n_tiles: int = 8, tile: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """What to train on: the region (or whole image) when it is small enough, else ``n_tiles``
    random tissue tiles of side ``tile`` inside it."""
    slide = as_slide(image)
    y0, x0, y1, x1 = check_region(region, slide.shape)
    if (y1 - y0) * (x1 - x0) <= WHOLE_IMAGE_MAX_PIXELS:
        return [slide.read_region(y0, x0, y1, x1)[..., :3]]
    from ...engine.tissue import tissue_boxes

    cands = tissue_boxes(slide, tile, (y0, x0, y1, x1), min_fraction=0.5)
    if not cands:
        raise JobError("no tissue found in the image/region to train on")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(cands), size=min(n_tiles, len(cands)), replace=False)
    return [slide.read_region(*cands[i])[..., :3] for i in sorted(pick)]


PREVIEW_MAX = 1024


def preview_box(shape, region=None, size: int = PREVIEW_MAX) -> tuple[int, int, int, int]:
    """The part of ``region`` of an image of ``shape`` (H, W, ...) shown live during training:
    all of it up to ``size`` px a side, else its central ``size`` x ``size`` window.
    (y0, x0, y1, x1) level-0 px."""
    y0, x0, y1, x1 = check_region(region, shape)
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
        box = preview_box(slide.shape, region)
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
                mpp: Optional[float] = None, device=None, tissue_only: bool = True, store=None, cancel=None):
    """Job: instance labels of ``image`` (whole, or ``region`` = (y0, x0, y1, x1) level-0 px),
    run by the engine; returns a :class:`~napari_histoai.engine.inference.LabelsResult`
    (uint32 labels on the grid of the pyramid level read, numpy or a zarr array in ``store``).

    ``threshold``: a number, "auto" (Otsu of the first tile's map, then kept for all tiles) or
    None (the model's own threshold). ``mpp``: the image's µm/px when its file has none.
    """
    slide = as_slide(image)
    k = model.channel if channel is None else int(channel)
    n_out = model.net.head.out_channels
    if not 0 <= k < n_out:
        raise JobError(f"channel {k} does not exist (the model has {n_out} channels)")
    if device is not None:
        model.net.to(device)
    seg = ContrastiveSegmenter(model, k, model.threshold if threshold is None else threshold,
                               min_distance=min_distance, min_size=min_size)
    result = yield from infer(slide, seg, region, mpp=mpp, tissue_only=tissue_only, store=store, cancel=cancel)
    yield Progress(result.n_tiles, result.n_tiles, f"{result.n_objects} nuclei")
    return result


def save_model(result: TrainResult, folder, mpp: Optional[float] = None, name: str = ""):
    """Save a trained segmenter as a model folder; returns its path."""
    from ...models import save_checkpoint

    state, cfg = result.checkpoint()
    cfg["mpp"] = None if mpp is None else float(mpp) * float(result.config.downsample)
    if name:
        cfg["name"] = name
    return save_checkpoint(folder, state, cfg)


def load_model(name_or_path) -> SegmenterModel:
    """A :class:`SegmenterModel` from a saved model folder (bundled/user name or path).

    The config fields it uses are checked, one line naming the field: ``architecture``
    (``n_channels``, ``width``), ``threshold`` and ``downsample`` as in training
    (:meth:`ContrastiveConfig.validate`), ``nuclei_channel`` an int in [0, n_channels), ``mpp``
    null or a positive number. ``training`` and ``metrics`` are a record only, not read."""
    from ...models import load_checkpoint, load_state_strict, resolve_model

    folder = resolve_model(name_or_path, KIND)
    state, cfg = load_checkpoint(folder, kind=KIND)
    what = f"model {folder.name}"
    arch = cfg.get("architecture", {})
    if not isinstance(arch, dict) or set(arch) - {"n_channels", "width"}:
        raise JobError(f"{what}: config field 'architecture' must be an object with n_channels and width, got {arch!r:.60}")
    checked = ContrastiveConfig(**arch, threshold=cfg.get("threshold", 0.5), downsample=cfg.get("downsample", 1.0))
    try:
        checked.validate()
    except JobError as e:
        raise JobError(f"{what}: {e}") from None
    channel, mpp = cfg.get("nuclei_channel", 0), cfg.get("mpp")
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < checked.n_channels:
        raise JobError(f"{what}: config field 'nuclei_channel' must be an int in [0, {checked.n_channels}), got {channel!r:.40}")
    if mpp is not None and (isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not 0 < mpp < float("inf")):
        raise JobError(f"{what}: config field 'mpp' must be null or a positive number, got {mpp!r:.40}")
    net, _ = build(checked.architecture())
    load_state_strict(net, {k[4:]: v for k, v in state.items() if k.startswith("net.")}, "contrastive segmenter")
    net.eval()
    thr = checked.threshold
    return SegmenterModel(net, channel, thr if isinstance(thr, str) else float(thr), float(checked.downsample), mpp, cfg)
