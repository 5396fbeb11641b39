"""Training data for point detectors: RGB images + points CSVs (``y,x,class``, 0-based px),
resampled to the model's µm/px, random crops with flips / 90-degree turns / colour jitter.

Class names that are not among the model's classes (e.g. ``unlabeled``, ``nucleus``) become
label -1: a nucleus of unknown class (a detection target, not a classification target).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import JobError
from ...io.points import read_points_csv

__all__ = ["PointImage", "load_folder", "load_mask_folder", "centroids_from_mask", "resample", "random_crop",
           "hed_jitter", "IMAGE_EXTS"]

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass
class PointImage:
    """image uint8 [H, W, 3]; points float32 [N, 2] (y, x) px; labels int64 [N] (-1 = unknown)."""

    name: str
    image: np.ndarray
    points: np.ndarray
    labels: np.ndarray


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        im = np.asarray(Image.open(path).convert("RGB"))
    except Exception as e:  # noqa: BLE001
        raise JobError(f"cannot read image {path}: {e}") from None
    return np.ascontiguousarray(im)


def resample(image: np.ndarray, points: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Rescale an image by ``factor`` (new = old * factor px) and its points accordingly."""
    if abs(factor - 1.0) < 1e-6:
        return image, points
    from ...engine.resize import resize, scaled_shape

    h, w = image.shape[:2]
    im = resize(image, scaled_shape((h, w), factor))
    sy, sx = im.shape[0] / h, im.shape[1] / w
    pts = (points + 0.5) * np.array([sy, sx], dtype=np.float32) - 0.5
    return im, pts.astype(np.float32)


def load_folder(images: str | os.PathLike, points: str | os.PathLike, classes: list[str],
                data_mpp: float | None = None, model_mpp: float | None = None) -> list[PointImage]:
    """All images in ``images`` with a same-stem CSV in ``points``; resampled from ``data_mpp``
    to ``model_mpp`` when both are given."""
    images, points = Path(images), Path(points)
    if not images.is_dir():
        raise JobError(f"image folder {images} not found")
    if not points.is_dir():
        raise JobError(f"points folder {points} not found")
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for p in sorted(images.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS:
            continue
        csv_path = points / (p.stem + ".csv")
        if not csv_path.is_file():
            continue
        im = _read_rgb(p)
        table = read_points_csv(csv_path)
        yx, names = table.yx.astype(np.float32), table.classes
        labels = np.array([index.get(n, -1) for n in names], dtype=np.int64)
        if data_mpp and model_mpp:
            im, yx = resample(im, yx, data_mpp / model_mpp)
        out.append(PointImage(p.stem, im, yx, labels))
    if not out:
        raise JobError(f"no image in {images} has a points CSV of the same name in {points}")
    return out


def centroids_from_mask(mask: np.ndarray, min_distance: float, min_size: int = 30) -> np.ndarray:
    """Approximate nucleus centres [N, 2] (y, x) px of a binary nuclei mask [H, W]: touching
    nuclei (one blob in a binary mask) are split by a distance-transform watershed whose markers
    lie at least ``min_distance`` px apart; regions under ``min_size`` px are dropped."""
    from scipy import ndimage as ndi

    from ..contrastive.postprocess import split_instances

    lab = split_instances(np.asarray(mask) > 0, min_distance=max(1, int(round(min_distance))), min_size=min_size)
    n = int(lab.max())
    if n == 0:
        return np.zeros((0, 2), np.float32)
    return np.asarray(ndi.center_of_mass(np.ones_like(lab), lab, np.arange(1, n + 1)), np.float32).reshape(-1, 2)


def load_mask_folder(images: str | os.PathLike, masks: str | os.PathLike, data_mpp: float, model_mpp: float,
                     names: list[str] | None = None, nucleus_diameter_um: float = 6.0) -> list[PointImage]:
    """Detection-only training items from binary nuclei masks: every image in ``images`` (or the
    stems in ``names``) with a same-stem mask in ``masks``; centres from
    :func:`centroids_from_mask` with markers half a ``nucleus_diameter_um`` apart, class unknown
    (label -1), resampled from ``data_mpp`` to ``model_mpp``."""
    from PIL import Image

    images, masks = Path(images), Path(masks)
    if not images.is_dir() or not masks.is_dir():
        raise JobError(f"image folder {images} or mask folder {masks} not found")
    wanted = set(names) if names is not None else None
    out = []
    for p in sorted(images.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS or (wanted is not None and p.stem not in wanted):
            continue
        m = next((q for q in sorted(masks.glob(p.stem + ".*")) if q.suffix.lower() in IMAGE_EXTS), None)
        if m is None:
            continue
        try:
            mask = np.asarray(Image.open(m))
        except Exception as e:  # noqa: BLE001
            raise JobError(f"cannot read mask {m}: {e}") from None
        if mask.ndim == 3:
            mask = mask[..., 0]
        im = _read_rgb(p)
        if mask.shape != im.shape[:2]:
            raise JobError(f"mask {m.name} is {mask.shape[1]}x{mask.shape[0]} px, its image {im.shape[1]}x{im.shape[0]}")
        yx = centroids_from_mask(mask, 0.5 * nucleus_diameter_um / data_mpp, min_size=int(round(2.0 / data_mpp ** 2)))
        im, yx = resample(im, yx, data_mpp / model_mpp)
        out.append(PointImage(p.stem, im, yx, np.full(len(yx), -1, np.int64)))
    if not out:
        raise JobError(f"no image in {images} has a mask of the same name in {masks}")
    return out


def random_crop(item: PointImage, size: int, rng: np.random.Generator, jitter: float = 0.1, hed: float = 0.0):
    """A random ``size`` crop (padded with white if the image is smaller) with a random flip /
    90-degree turn, stain jitter of strength ``hed`` (:func:`hed_jitter`; 0 = off, and then no
    random number is drawn for it) and colour jitter. Returns (crop float32 [3, size, size] in
    [0, 1], points [G, 2] (y, x) normalised to [0, 1] of the crop, labels [G])."""
    im, pts, lab = item.image, item.points, item.labels
    h, w = im.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        im = np.pad(im, ((0, ph), (0, pw), (0, 0)), constant_values=255)
        h, w = im.shape[:2]
    y0 = int(rng.integers(0, h - size + 1))
    x0 = int(rng.integers(0, w - size + 1))
    crop = im[y0:y0 + size, x0:x0 + size].astype(np.float32) / 255.0
    p = pts - np.array([y0, x0], dtype=np.float32)
    inside = (p[:, 0] >= -0.5) & (p[:, 0] < size - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] < size - 0.5)
    p, lab = p[inside], lab[inside]
    # dihedral augmentation, applied to pixels and points alike
    k = int(rng.integers(0, 4))
    for _ in range(k):  # rot90 counter-clockwise: (y, x) -> (S-1-x, y)
        crop = np.rot90(crop)
        p = np.stack([size - 1 - p[:, 1], p[:, 0]], 1)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
        p = np.stack([p[:, 0], size - 1 - p[:, 1]], 1)
    if hed > 0:
        crop = hed_jitter(crop, rng, hed)
    if jitter > 0:
        crop = _color_jitter(crop, rng, jitter)
    norm = (p + 0.5) / size
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), norm.astype(np.float32), lab


def hed_jitter(im: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    """Stain augmentation in haematoxylin / eosin / DAB space (Tellez et al., 2018): ``im``
    float [H, W, 3] in [0, 1] -> optical density (-ln of the 8-bit transmission, +1 so white is
    0) -> stain amounts through scikit-image's HED matrix (not clipped, so the round trip is
    exact) -> each stain's amount x (1 + U(-s, s)) + U(-s, s) -> back to RGB, float32 [H, W, 3]."""
    from skimage.color import hed_from_rgb, rgb_from_hed

    from ..stain import _od

    c = _od(im * 255.0).reshape(-1, 3) @ hed_from_rgb
    c = c * (1.0 + rng.uniform(-s, s, 3)) + rng.uniform(-s, s, 3)
    out = np.exp(-(c @ rgb_from_hed)) * 256.0 - 1.0
    return np.clip(out / 255.0, 0.0, 1.0).reshape(im.shape).astype(np.float32)


def _color_jitter(im: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    """Brightness, contrast, saturation and per-channel gain jitter of strength ``s``."""
    gray = im.mean(-1, keepdims=True)
    im = gray + (im - gray) * (1 + rng.uniform(-2 * s, 2 * s))          # saturation
    m = im.mean()
    im = m + (im - m) * (1 + rng.uniform(-s, s)) + rng.uniform(-s, s) * 0.5  # contrast, brightness
    im = im * (1 + rng.uniform(-s / 2, s / 2, size=3)).astype(np.float32)    # stain-ish gains
    return np.clip(im, 0, 1).astype(np.float32)
