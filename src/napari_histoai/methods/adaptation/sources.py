"""Training inputs of domain adaptation: labelled fluorescence (source) and unlabelled H&E
(target), checked with one clear line per problem and brought to the model's resolution.

Source: single-channel fluorescence [H, W] (uint8, uint16 or float; grey stored as RGB with equal
channels is accepted) with an instance mask [H, W] of integer ids (0 = background). Each source
image is rescaled so that its median nucleus has ``nucleus_um`` / ``mpp`` px diameter (the mask
gives the size). Target: RGB uint8 H&E [H, W, 3], resampled from its µm/px (file, given, or
assumed to be the model's) to ``mpp``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import JobError

__all__ = ["SourceImage", "TargetImage", "check_source", "check_target", "read_source_folder",
           "read_target_folder", "check_training_set", "rescale_source", "MIN_SOURCE_NUCLEI"]

MIN_SOURCE_NUCLEI = 20
_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass
class SourceImage:
    """One labelled fluorescence image: ``image`` [H, W] uint8 (bright nuclei, 0..255) and
    ``mask`` [H, W] int32 instance ids."""

    name: str
    image: np.ndarray
    mask: np.ndarray


@dataclass
class TargetImage:
    """One unlabelled H&E image: ``rgb`` [H, W, 3] uint8 at ``mpp`` µm/px (None = unknown)."""

    name: str
    rgb: np.ndarray
    mpp: Optional[float] = None


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Normalise to 0..255 (the paper's first pre-processing step): 0.5-99.8 percentile stretch."""
    if img.dtype == np.uint8:
        return img
    a = img.astype(np.float32)
    lo, hi = np.percentile(a, [0.5, 99.8])
    if hi <= lo:
        hi = lo + 1
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def check_source(image: np.ndarray, mask: Optional[np.ndarray], name: str) -> SourceImage:
    """A :class:`SourceImage` from arrays, or ``JobError`` naming the problem in one line."""
    image = np.asarray(image)
    if mask is None:
        raise JobError(f"source image {name} has no mask (every fluorescence image needs instance labels)")
    mask = np.asarray(mask)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise JobError(f"source image {name} is colour RGB; fluorescence must be one channel (the nuclear stain)")
        image = rgb[..., 0]
    elif image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise JobError(f"source image {name} has shape {image.shape}; expected a 2-D single-channel image")
    if image.size == 0 or image.max() == image.min():
        raise JobError(f"source image {name} is empty or constant")
    if mask.shape != image.shape:
        raise JobError(f"mask of {name} is {mask.shape[:2] if mask.ndim >= 2 else mask.shape}, "
                       f"the image {image.shape}: they must have the same size")
    if not np.issubdtype(mask.dtype, np.integer):
        raise JobError(f"mask of {name} is {mask.dtype}; instance masks hold integer ids (0 = background)")
    if mask.min() < 0:
        raise JobError(f"mask of {name} has negative values; instance masks hold ids 0..N")
    if mask.max() == 1:
        from scipy import ndimage as ndi

        if ndi.label(mask > 0)[1] > 1:
            raise JobError(f"mask of {name} is binary (0/1) with several objects; instance labels (1..N, one id "
                           "per nucleus) are needed")
    return SourceImage(name, _to_uint8(image), mask.astype(np.int32))


def check_target(rgb: np.ndarray, name: str, mpp: Optional[float] = None) -> TargetImage:
    """A :class:`TargetImage`, or ``JobError``: RGB uint8, bright background, some colour."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise JobError(f"target image {name} has shape {rgb.shape}; H&E targets are RGB [H, W, 3]")
    if rgb.dtype != np.uint8:
        raise JobError(f"target image {name} is {rgb.dtype}; H&E targets are 8-bit RGB")
    rgb = rgb[..., :3]
    if min(rgb.shape[:2]) < 64:
        raise JobError(f"target image {name} is {rgb.shape[1]}x{rgb.shape[0]} px; at least 64 px a side is needed")
    small = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256)].astype(np.float32)
    grey = small.mean(-1)
    chroma = (small.max(-1) - small.min(-1)).mean()
    blank = np.median(grey) > 200 and grey.std() < 12   # an empty bright-field tile: harmless
    if not blank and (np.median(grey) < 80 or chroma < 8):
        raise JobError(f"target image {name} does not look like H&E (dark background or no colour); "
                       "targets are bright-field H&E images")
    return TargetImage(name, np.ascontiguousarray(rgb), mpp)


def _stem(p: Path) -> str:
    n = p.name
    for suf in (".ome.tiff", ".ome.tif"):
        if n.lower().endswith(suf):
            return n[: -len(suf)]
    return p.stem


def _images_in(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise JobError(f"{what} folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_IMAGE_SUFFIXES))
    if not files:
        raise JobError(f"{what} folder {folder} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    return files


def _read(path: Path) -> np.ndarray:
    import tifffile
    from PIL import Image

    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(str(path))
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as e:  # corrupt / truncated files: one line
        raise JobError(f"cannot read {path.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def read_source_folder(images: str | os.PathLike, masks: str | os.PathLike) -> list[SourceImage]:
    """Source pairs from a folder of fluorescence images and a folder of masks named alike
    (``a.png`` + ``a.tif``)."""
    imgs = _images_in(Path(images), "source images")
    mask_files = {_stem(p): p for p in _images_in(Path(masks), "source masks")}
    missing = [p.name for p in imgs if _stem(p) not in mask_files]
    if missing:
        raise JobError(f"{len(missing)} source image(s) have no mask in {masks} (e.g. {missing[0]}); "
                       "masks must be named like their images")
    return [check_source(_read(p), _read(mask_files[_stem(p)]), p.name) for p in imgs]


def read_target_folder(folder: str | os.PathLike, mpp: Optional[float] = None) -> list[TargetImage]:
    """Target H&E images of a folder (PNG/JPEG/TIFF; slides are read at level 0 as a whole, so
    keep targets to tiles or regions)."""
    from ...io import open_image

    out = []
    for p in _images_in(Path(folder), "target images"):
        try:
            with open_image(p) as img:
                if img.shape[0] * img.shape[1] > 64_000_000:
                    raise JobError(f"target image {p.name} is {img.shape[1]}x{img.shape[0]} px; use tiles or "
                                   "regions of slides as targets (at most 64 MP each)")
                rgb = img.read_region(0, 0, img.shape[0], img.shape[1])
                file_mpp = img.mpp
        except JobError:
            raise
        except Exception as e:
            raise JobError(f"cannot read {p.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        out.append(check_target(rgb, p.name, mpp if mpp is not None else file_mpp))
    return out


def check_training_set(sources: Sequence[SourceImage], targets: Sequence[TargetImage]) -> None:
    """Enough to train: >= 2 source images with >= MIN_SOURCE_NUCLEI nuclei in all, >= 1 target."""
    n = sum(int(len(np.unique(s.mask)) - (1 if (s.mask == 0).any() else 0)) for s in sources)
    if len(sources) < 2 or n < MIN_SOURCE_NUCLEI:
        raise JobError(f"too few source images to train ({len(sources)} image(s), {n} nuclei; need at least 2 "
                       f"images and {MIN_SOURCE_NUCLEI} nuclei)")
    if not targets:
        raise JobError("no target H&E images to adapt to")


def median_diameter(mask: np.ndarray) -> float:
    """Median equivalent diameter (px) of the instances in ``mask``."""
    ids, counts = np.unique(mask[mask > 0], return_counts=True)
    if len(counts) == 0:
        return 0.0
    return float(np.sqrt(4 * np.median(counts) / np.pi))


def rescale_source(src: SourceImage, diameter_px: float) -> SourceImage:
    """``src`` resized so its median nucleus is ``diameter_px`` wide (image bilinear, mask
    nearest)."""
    import cv2

    d = median_diameter(src.mask)
    if d <= 0:
        return src
    f = diameter_px / d
    h, w = src.image.shape
    size = (max(8, int(round(w * f))), max(8, int(round(h * f))))
    img = cv2.resize(src.image, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    mask = cv2.resize(src.mask.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int32)
    return SourceImage(src.name, img, mask)


def resample_target(t: TargetImage, mpp: float) -> np.ndarray:
    """Target RGB at ``mpp`` µm/px (unchanged when its own pixel size is unknown)."""
    import cv2

    if not t.mpp or abs(t.mpp / mpp - 1) < 0.02:
        return t.rgb
    f = t.mpp / mpp
    h, w = t.rgb.shape[:2]
    size = (max(8, int(round(w * f))), max(8, int(round(h * f))))
    return cv2.resize(t.rgb, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
