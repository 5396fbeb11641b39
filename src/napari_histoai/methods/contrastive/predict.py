"""Confidence maps for whole images and tiles (inference only).

The network is fully convolutional with a receptive field of 165 px (83 px of context each
side), so tiles overlapping by >= 2 x 83 px give the same maps as one pass over the image.
"""

from __future__ import annotations

import numpy as np
import torch

from ...engine.tiling import tile_grid

CONTEXT = 83  # px of context each side that the dilated network sees
TILE = 1024
OVERLAP = 2 * 96


def to_input(rgb: np.ndarray, device=None) -> torch.Tensor:
    """RGB uint8 [H, W, 3] (or [B, H, W, 3]) -> float tensor [B, 3, H, W] = 0.95 x + 0.05."""
    a = np.asarray(rgb)[..., :3]
    if a.ndim == 3:
        a = a[None]
    t = torch.from_numpy(np.ascontiguousarray(a)).to(device=device).permute(0, 3, 1, 2).float()
    return (t / 255.0) * 0.95 + 0.05


def resample(rgb: np.ndarray, downsample: float) -> np.ndarray:
    """Resize an RGB uint8 image by 1/downsample (area-averaging); identity for 1."""
    if downsample == 1:
        return rgb
    from skimage.transform import resize

    h, w = rgb.shape[:2]
    out = resize(rgb, (max(1, round(h / downsample)), max(1, round(w / downsample))),
                 order=1, anti_aliasing=downsample > 1, preserve_range=True)
    return out.astype(np.uint8)


def upsample_maps(conf: np.ndarray, shape: tuple) -> np.ndarray:
    """[K, h, w] -> [K, *shape] bilinear."""
    if conf.shape[1:] == tuple(shape):
        return conf
    t = torch.from_numpy(conf)[None]
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0].numpy()


@torch.no_grad()
def confidence(net: torch.nn.Module, rgb: np.ndarray, device=None, downsample: float = 1.0,
               tile: int = TILE) -> np.ndarray:
    """Confidence maps [K, H, W] float32 of an RGB uint8 image [H, W, 3] (tiled when large)."""
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        h0, w0 = rgb.shape[:2]
        img = resample(np.asarray(rgb)[..., :3], downsample)
        H, W = img.shape[:2]
        if H <= tile + OVERLAP and W <= tile + OVERLAP:
            out = net(to_input(img, device).contiguous(memory_format=torch.channels_last))[0].float().cpu().numpy()
        else:
            out = None
            for t in tile_grid((H, W), tile=tile, overlap=OVERLAP):
                c = net(to_input(img[t.y0:t.y1, t.x0:t.x1], device))[0].float().cpu().numpy()
                if out is None:
                    out = np.zeros((c.shape[0], H, W), np.float32)
                out[:, t.cy0:t.cy1, t.cx0:t.cx1] = c[:, t.cy0 - t.y0:t.cy1 - t.y0, t.cx0 - t.x0:t.cx1 - t.x0]
        return upsample_maps(out.astype(np.float32), (h0, w0))
    finally:
        net.train(was_training)
