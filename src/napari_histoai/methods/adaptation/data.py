"""Training crops for CyC-PDAM: source images (fluorescence or synthesised H&E) with instance
targets, and unlabelled target H&E crops; flips and 90-degree rotations as augmentation.

Crops are uint8 [c, c, 3]; instance targets follow torchvision's Mask R-CNN format.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["inverted_rgb", "random_crop", "instance_targets", "SourcePool", "TargetPool", "MIN_OBJECTS"]

MIN_OBJECTS = 3   # the paper drops source crops with fewer nuclei


def inverted_rgb(grey: np.ndarray) -> np.ndarray:
    """Fluorescence [H, W] uint8 -> inverted grey as RGB [H, W, 3] uint8 (dark nuclei on white,
    the paper's input to CycleGAN)."""
    inv = 255 - grey
    return np.repeat(inv[..., None], 3, axis=2)


def _augment(arrs: list, rng: np.random.Generator) -> list:
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(0, 1))
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def random_crop(arrs: list, size: int, rng: np.random.Generator, fill: Sequence = ()) -> list:
    """The same random ``size`` x ``size`` crop of every array in ``arrs`` (padded with ``fill``
    values, default 0, where an image is smaller)."""
    h, w = arrs[0].shape[:2]
    y = int(rng.integers(0, max(1, h - size + 1)))
    x = int(rng.integers(0, max(1, w - size + 1)))
    out = []
    for i, a in enumerate(arrs):
        c = a[y:y + size, x:x + size]
        if c.shape[0] < size or c.shape[1] < size:
            pad = np.empty((size, size) + a.shape[2:], a.dtype)
            pad[...] = fill[i] if i < len(fill) else 0
            pad[: c.shape[0], : c.shape[1]] = c
            c = pad
        out.append(c)
    return out


def instance_targets(mask: np.ndarray, min_area: int = 4) -> dict:
    """Mask R-CNN targets of an instance mask [H, W]: boxes [N, 4] float (x0, y0, x1, y1),
    labels [N] (all 1), masks [N, H, W] uint8; instances under ``min_area`` px are dropped."""
    import torch
    from scipy import ndimage as ndi

    ids = np.unique(mask)
    ids = ids[ids > 0]
    boxes, masks = [], []
    slices = ndi.find_objects(mask)
    for i in ids:
        sl = slices[i - 1] if i - 1 < len(slices) else None
        if sl is None:
            continue
        m = mask[sl] == i
        if m.sum() < min_area:
            continue
        full = np.zeros(mask.shape, np.uint8)
        full[sl][m] = 1
        boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
        masks.append(full)
    n = len(boxes)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        "labels": torch.ones(n, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks)) if n else torch.zeros((0,) + mask.shape, dtype=torch.uint8),
    }


def stain_jitter(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random stain variation in HED optical-density space (Tellez et al. 2018): each of the
    hematoxylin and eosin channels scaled by U(1 - s, 1 + s) and shifted by U(-s, s) / 10 (the
    residual DAB channel is left alone)."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(rgb)
    scale = np.r_[rng.uniform(1 - strength, 1 + strength, 2), 1.0]
    shift = np.r_[rng.uniform(-strength, strength, 2) / 10, 0.0]
    hed = hed * scale + shift
    return (np.clip(hed2rgb(hed), 0, 1) * 255).round().astype(np.uint8)


def rescale_crop(rgb: np.ndarray, mask: np.ndarray, factor: float) -> tuple:
    """A crop and its mask zoomed by ``factor`` about the centre, same size (image bilinear, mask
    nearest; zooming out pads with the image's median colour and background)."""
    import cv2

    c = rgb.shape[0]
    n = max(8, int(round(c * factor)))
    img = cv2.resize(rgb, (n, n), interpolation=cv2.INTER_LINEAR)
    m = cv2.resize(mask.astype(np.float32), (n, n), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    if n >= c:
        o = (n - c) // 2
        return img[o:o + c, o:o + c], m[o:o + c, o:o + c]
    out_i = np.empty_like(rgb)
    out_i[:] = np.median(rgb.reshape(-1, 3), axis=0).astype(np.uint8)
    out_m = np.zeros_like(mask)
    o = (c - n) // 2
    out_i[o:o + n, o:o + n], out_m[o:o + n, o:o + n] = img, m
    return out_i, out_m


class SourcePool:
    """Labelled crops: (rgb [c, c, 3] uint8, instance mask [c, c] int32) with >= MIN_OBJECTS
    nuclei when any crop of the pool has that many (10 tries). Optional augmentation: stain jitter
    of ``stain`` strength and a zoom drawn log-uniformly from ``zoom`` = (lo, hi)."""

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], rng: np.random.Generator,
                 stain: float = 0.0, zoom: tuple = (1.0, 1.0)):
        self.images, self.masks, self.rng = list(images), list(masks), rng
        self.stain, self.zoom = float(stain), tuple(zoom)
        self.fill = [np.median(im.reshape(-1, 3), axis=0).astype(np.uint8) for im in self.images]
        sizes = np.array([m.size for m in self.masks], float)
        self.p = sizes / sizes.sum()

    def sample(self, size: int):
        best = None
        for _ in range(10):
            i = int(self.rng.choice(len(self.images), p=self.p))
            img, m = random_crop([self.images[i], self.masks[i]], size, self.rng, fill=[self.fill[i], 0])
            n = len(np.unique(m)) - 1
            if best is None or n > best[2]:
                best = (img, m, n)
            if n >= MIN_OBJECTS:
                break
        img, m = _augment([best[0], best[1]], self.rng)
        if self.zoom != (1.0, 1.0):
            img, m = rescale_crop(img, m, float(np.exp(self.rng.uniform(*np.log(self.zoom)))))
        if self.stain > 0:
            img = stain_jitter(img, self.stain, self.rng)
        return img, m


class TargetPool:
    """Unlabelled target crops [c, c, 3] uint8 from images at the model's resolution."""

    def __init__(self, images: Sequence[np.ndarray], rng: np.random.Generator):
        self.images, self.rng = list(images), rng
        sizes = np.array([im.shape[0] * im.shape[1] for im in self.images], float)
        self.p = sizes / sizes.sum()
        self.fill = [np.median(im.reshape(-1, 3), axis=0).astype(np.uint8) for im in self.images]

    def sample(self, size: int) -> np.ndarray:
        i = int(self.rng.choice(len(self.images), p=self.p))
        (img,) = random_crop([self.images[i]], size, self.rng, fill=[self.fill[i]])
        return _augment([img], self.rng)[0]
