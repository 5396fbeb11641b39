"""Inference with the confidence network, as engine models (the engine tiles, resamples and
stitches; nothing here loops over tiles).

* :class:`ConfidenceMaps` - a dense map: the K confidence maps;
* :class:`ContrastiveSegmenter` - an instance segmenter: the nuclei channel thresholded, the
  paper's morphology and a distance-transform watershed split, per tile;
* :func:`confidence` - the maps of one in-memory image at its own resolution.

The network is fully convolutional with a receptive field of 165 px (83 px of context each
side), so tiles overlapping by >= 2 x 83 px give the same maps as one pass over the image.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

TILE = 1024
OVERLAP = 2 * 96  # > 2 x the 83 px of context each side that the dilated network sees


def to_input(rgb: np.ndarray, device=None) -> torch.Tensor:
    """RGB uint8 [H, W, 3] (or [B, H, W, 3]) -> float tensor [B, 3, H, W] = 0.95 x + 0.05."""
    a = np.asarray(rgb)[..., :3]
    if a.ndim == 3:
        a = a[None]
    t = torch.from_numpy(np.ascontiguousarray(a)).to(device=device).permute(0, 3, 1, 2).float()
    return (t / 255.0) * 0.95 + 0.05


@torch.no_grad()
def net_maps(net: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
    """Confidence maps [K, H, W] float32 of one RGB uint8 image [H, W, 3] in one pass (eval
    mode; the network's training mode is restored)."""
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        x = to_input(rgb, device).contiguous(memory_format=torch.channels_last)
        return net(x)[0].float().cpu().numpy()
    finally:
        net.train(was_training)


class ConfidenceMaps:
    """The engine's dense-map protocol over a confidence network: maps [K, h, w] per tile at
    1 / ``downsample`` of the input resolution (the network's working resolution)."""

    stride = 1

    def __init__(self, net: torch.nn.Module, downsample: float = 1.0, mpp: Optional[float] = None,
                 tile: int = TILE, name: str = "contrastive"):
        self.net, self.downsample, self.mpp, self.name = net, float(downsample), mpp, name
        self.tile_size, self.overlap = int(tile), OVERLAP
        self.channels = [str(k) for k in range(net.head.out_channels)]
        self.batch_size = 1

    def predict_maps(self, tiles: Sequence[np.ndarray]) -> list:
        return [net_maps(self.net, t) for t in tiles]


class ContrastiveSegmenter:
    """The engine's instance-segmenter protocol: the nuclei ``channel`` of the maps thresholded
    at ``threshold`` (a number, or "auto": Otsu of the first tile's map, then kept for every
    tile), the paper's opening/closing, then a watershed split (``min_distance`` between nuclei
    centres, ``min_size`` px per nucleus; both in working px)."""

    def __init__(self, model, channel: int, threshold, min_distance: int = 5, min_size: int = 20):
        self.net, self.channel = model.net, int(channel)
        self.mpp, self.downsample = model.mpp, model.downsample
        self.threshold = threshold
        self.min_distance, self.min_size = int(min_distance), int(min_size)
        self.name = "contrastive segmenter"
        self.tile_size, self.overlap, self.batch_size = TILE, OVERLAP, 1

    def segment_tiles(self, tiles: Sequence[np.ndarray]) -> list:
        from .postprocess import labels_from_confidence, resolve_threshold

        out = []
        for t in tiles:
            conf = net_maps(self.net, t)[self.channel]
            if isinstance(self.threshold, str) or self.threshold is None:
                self.threshold = resolve_threshold(conf, self.threshold)
            out.append(labels_from_confidence(conf, self.threshold, self.min_distance, self.min_size))
        return out


def confidence(net: torch.nn.Module, rgb: np.ndarray, device=None, downsample: float = 1.0,
               tile: int = TILE) -> np.ndarray:
    """Confidence maps [K, H, W] float32 of an RGB uint8 image [H, W, 3] (tiled by the engine
    when large), computed at 1 / ``downsample`` and brought back to the image's size."""
    from ...engine.inference import infer_array
    from ...engine.resize import resize

    if device is not None:
        net.to(device)
    maps = infer_array(ConfidenceMaps(net, downsample, tile=tile), np.asarray(rgb)[..., :3]).maps
    return resize(maps, rgb.shape[:2], "map")
