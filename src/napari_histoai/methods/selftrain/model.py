"""The trained self-trained segmenter behind the engine's InstanceSegmenter protocol, and its
safetensors + JSON files (kind ``selftrain-segmenter``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from ...errors import JobError
from .config import SelfTrainConfig

__all__ = ["KIND", "SelfTrainedSegmenter", "instances_from_maps", "save_selftrained", "load_selftrained"]

KIND = "selftrain-segmenter"


def instances_from_maps(prob: np.ndarray, dist: np.ndarray, cfg: SelfTrainConfig) -> np.ndarray:
    """Instance labels int32 [H, W] from nuclei probability and distance map [H, W] in [0, 1]:
    mask = prob >= threshold, holes filled, opened; markers = maxima of the smoothed distance map
    at least ``min_distance_um`` apart; watershed on the distance map; small objects dropped."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import relabel_sequential, watershed

    from .pseudo import _disk

    m = ndi.binary_fill_holes(prob >= cfg.threshold)
    r = max(1, int(round(cfg.px(cfg.open_um))))
    m = ndi.binary_opening(m, structure=_disk(r))
    if not m.any():
        return np.zeros(prob.shape, np.int32)
    cc, _ = ndi.label(m)
    d = ndi.gaussian_filter(dist.astype(np.float32), 1.0)
    peaks = peak_local_max(d, min_distance=max(1, int(round(cfg.px(cfg.min_distance_um)))), labels=cc,
                           threshold_abs=0.3, exclude_border=False)
    markers = np.zeros(m.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    lab = watershed(-d, markers, mask=m)
    missing = np.setdiff1d(np.unique(cc[m]), np.unique(cc[lab > 0]))   # components without a marker
    if len(missing):
        extra = np.zeros(int(cc.max()) + 1, np.int32)
        extra[missing] = np.arange(len(missing)) + int(lab.max()) + 1
        lab = np.where(lab > 0, lab, extra[cc])
    sizes = np.bincount(lab.ravel())
    small = sizes < cfg.min_size_um2 / cfg.mpp ** 2
    small[0] = False
    lab[small[lab]] = 0
    return relabel_sequential(lab)[0].astype(np.int32)


class SelfTrainedSegmenter:
    """InstanceSegmenter: RGB uint8 tiles at ``mpp`` µm/px -> instance labels per tile."""

    def __init__(self, net, config: SelfTrainConfig, name: str = "selftrained", device="cpu"):
        import torch

        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.config = config
        self.name = name
        self.mpp = float(config.mpp)
        self.tile_size = int(config.tile_size)
        self.overlap = int(config.overlap)
        self.batch_size = 2

    def maps(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nuclei probability, distance map), each float32 [h, w], of one RGB uint8 tile; the
        mean over the 4 rotations when ``config.tta``."""
        import torch

        from ..detection.predict import _to_batch

        x, [(h, w)] = _to_batch([tile], self.net.stride, self.device)
        ks = range(4) if self.config.tta else range(1)
        with torch.inference_mode():
            y = sum(torch.rot90(self.net(torch.rot90(x, k, (2, 3))), -k, (2, 3)) for k in ks) / len(ks)
        y = y[0, :, :h, :w].float().cpu()
        return y[0].sigmoid().numpy(), y[1].sigmoid().numpy()

    def segment_tiles(self, tiles: Sequence[np.ndarray]) -> list:
        return [instances_from_maps(*self.maps(t), self.config) for t in tiles]


def save_selftrained(net, config: SelfTrainConfig, folder: str | os.PathLike, *, training: Optional[dict] = None):
    """Atomic safetensors + JSON (models.save_checkpoint)."""
    from ...models import save_checkpoint

    return save_checkpoint(folder, {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                           {"kind": KIND, "architecture": config.to_dict(), "mpp": config.mpp,
                            "training": training or {}})


def load_selftrained(name_or_path: str | os.PathLike, device="cpu") -> SelfTrainedSegmenter:
    """A :class:`SelfTrainedSegmenter`; one-line errors for other kinds and weights that do not fit."""
    from ...models import load_checkpoint, load_state_strict
    from ..unet import UNet

    state, cfg = load_checkpoint(name_or_path, KIND)
    try:
        config = SelfTrainConfig.from_dict(cfg["architecture"])
        net = UNet(config.widths)
    except (KeyError, TypeError, ValueError) as e:
        raise JobError(f"model {name_or_path} has an unreadable architecture ({e})") from None
    load_state_strict(net, state, f"segmenter {Path(str(name_or_path)).name}")
    return SelfTrainedSegmenter(net, config, name=Path(str(name_or_path)).name, device=device)
