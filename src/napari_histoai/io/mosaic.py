"""Large pyramidal test slides built from real image tiles, fast.

A :class:`PeriodicMosaic` lays P x P real tiles (e.g. crops of CRCHistoPhenotypes images) out
periodically over an arbitrarily large canvas. Because the canvas repeats every ``P * tile`` px,
every pyramid level has at most P x P distinct tiles; each is JPEG-encoded once and the bytes
are reused, so a 100k x 100k px, 8-level OME-TIFF (SubIFDs) is written in about a minute.
Lower levels are true 2^k block-mean downsamples of the level-0 canvas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


class PeriodicMosaic:
    """Canvas [H, W, 3] uint8 = ``base`` (P*t x P*t) repeated; ``base`` from real tiles."""

    def __init__(self, tiles: Sequence[np.ndarray], tile: int = 256, period: int = 8):
        tiles = [np.asarray(t)[:tile, :tile, :3] for t in tiles]
        if not tiles or any(t.shape != (tile, tile, 3) for t in tiles):
            raise ValueError(f"need RGB tiles of at least {tile} x {tile} px")
        p = period
        self.tile, self.period = tile, p
        base = np.zeros((p * tile, p * tile, 3), np.uint8)
        for i in range(p * p):
            y, x = divmod(i, p)
            base[y * tile:(y + 1) * tile, x * tile:(x + 1) * tile] = tiles[i % len(tiles)]
        self.base = base

    def region(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Level-0 pixels [y0:y1, x0:x1] of the infinite periodic canvas."""
        n = self.base.shape[0]
        ys = np.arange(y0, y1) % n
        xs = np.arange(x0, x1) % n
        return self.base[np.ix_(ys, xs)]

    def level_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        """Tile (ty, tx) of pyramid ``level`` (block mean over 2^level x 2^level px).

        Built recursively from the four tiles of the level below, cached by position within
        the period, so memory stays at a few tiles per level whatever the level."""
        return np.clip(np.rint(self._mean_tile(level, ty, tx)), 0, 255).astype(np.uint8)

    def _mean_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        p, t = self.period, self.tile
        key = (level, (ty << level) % p, (tx << level) % p)
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            if level == 0:
                cache[key] = self.region(ty * t, tx * t, (ty + 1) * t, (tx + 1) * t).astype(np.float32)
            else:
                quad = np.concatenate([
                    np.concatenate([self._mean_tile(level - 1, 2 * ty + dy, 2 * tx + dx) for dx in (0, 1)], axis=1)
                    for dy in (0, 1)], axis=0)
                cache[key] = quad.reshape(t, 2, t, 2, 3).mean(axis=(1, 3))
        return cache[key]


def write_mosaic_slide(
    path: str | os.PathLike,
    tiles: Sequence[np.ndarray],
    shape: tuple[int, int],
    mpp: float = 0.5,
    tile: int = 256,
    period: int = 8,
    quality: int = 85,
    min_size: int = 512,
) -> Path:
    """Write an H x W tiled JPEG OME-TIFF pyramid (SubIFDs) of a :class:`PeriodicMosaic`."""
    import imagecodecs
    import tifffile

    mosaic = PeriodicMosaic(tiles, tile, period)
    h, w = int(shape[0]), int(shape[1])
    n_levels = 1
    while max(h, w) / 2 ** n_levels >= max(min_size, tile):
        n_levels += 1
    cache: dict = {}

    def encoded(level: int, ty: int, tx: int) -> bytes:
        key = (level, (ty * 2 ** level) % period, (tx * 2 ** level) % period)
        if key not in cache:
            cache[key] = imagecodecs.jpeg8_encode(mosaic.level_tile(level, ty, tx), level=quality)
        return cache[key]

    def level_bytes(level: int):
        lh, lw = -(-h // 2 ** level), -(-w // 2 ** level)
        for ty in range(-(-lh // tile)):
            for tx in range(-(-lw // tile)):
                yield encoded(level, ty, tx)

    meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp,
            "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
    common = dict(dtype=np.uint8, tile=(tile, tile), compression="jpeg", photometric="rgb", resolutionunit="CENTIMETER")
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(level_bytes(0), shape=(h, w, 3), subifds=n_levels - 1, metadata=meta,
                  resolution=(1e4 / mpp, 1e4 / mpp), **common)
        for lv in range(1, n_levels):
            f = 2 ** lv
            tif.write(level_bytes(lv), shape=(-(-h // f), -(-w // f), 3), subfiletype=1, metadata=None,
                      resolution=(1e4 / (mpp * f), 1e4 / (mpp * f)), **common)
    return path


def crchisto_tiles(data_dir: str | os.PathLike, n: int = 64, tile: int = 256, split: str = "train") -> list[np.ndarray]:
    """``n`` real tiles (tile x tile crops) from CRCHistoPhenotypes images, deterministic."""
    from PIL import Image

    imgs = sorted((Path(data_dir) / "crchisto" / split / "images").glob("*.png"))
    out = []
    for i, p in enumerate(imgs):
        a = np.asarray(Image.open(p).convert("RGB"))
        for oy, ox in ((0, 0), (a.shape[0] - tile, a.shape[1] - tile)):
            out.append(a[oy:oy + tile, ox:ox + tile].copy())
            if len(out) >= n:
                return out
    return out
