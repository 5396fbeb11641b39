"""One interface for every image the plugin opens: :class:`SlideImage`.

Levels are lazy dask arrays (Y, X, C); nothing is read until a region is asked for. The back ends
(``tiff_backend``, ``openslide_backend``, ``zarr_backend``, ``pillow_backend``) each build a
``SlideImage``; :func:`~.open.open_image` picks one for a file, :func:`from_array` wraps arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import JobError

# largest plain (non-tiled) image we decode into memory, in pixels
MAX_IN_MEMORY_PIXELS = 400_000_000


@dataclass
class SlideImage:
    """An opened image or slide.

    levels: list of dask arrays [Y, X, C] from full resolution down (level 0 first)
    mpp: µm per pixel at level 0 (None when the file does not say)
    magnification: objective power (None when unknown)
    backend: "tifffile" | "openslide" | "ome-zarr" | "pillow" | "array"
    """

    path: Optional[Path]
    levels: list
    mpp: Optional[float] = None
    magnification: Optional[float] = None
    backend: str = "array"
    format: str = ""
    metadata: dict = field(default_factory=dict)
    _close: Optional[Callable[[], None]] = None

    # ----------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of level 0: (H, W, C)."""
        return tuple(int(v) for v in self.levels[0].shape)

    @property
    def n_channels(self) -> int:
        return int(self.levels[0].shape[2])

    @property
    def dtype(self) -> np.dtype:
        return self.levels[0].dtype

    @property
    def downsamples(self) -> list[float]:
        """Level-0 pixels per level pixel, per level (along x)."""
        w0 = self.levels[0].shape[1]
        return [w0 / lv.shape[1] for lv in self.levels]

    def level_mpp(self, level: int) -> Optional[float]:
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample``."""
        best = 0
        for i, d in enumerate(self.downsamples):
            if d <= downsample * 1.01:
                best = i
        return best

    # ----------------------------------------------------------------- reading
    def read_region(self, y0: int, x0: int, y1: int, x1: int, level: int = 0) -> np.ndarray:
        """Pixels [y0:y1, x0:x1] of ``level`` (coordinates in that level's pixels) as a numpy
        array [h, w, C]. Out-of-range regions raise ``JobError``."""
        lv = self.levels[level]
        h, w = lv.shape[:2]
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise JobError(f"region ({y0},{x0})-({y1},{x1}) is outside the image ({h} x {w} px at level {level})")
        try:
            return np.asarray(lv[y0:y1, x0:x1].compute())
        except JobError:
            raise
        except Exception as e:  # corrupt or truncated tiles surface here, not at open time
            raise JobError(f"cannot read pixels of {self.name}: {_first_line(e)}") from None

    def read_overview(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """(pixels [h, w, C] of the whole image with max(h, w) <= about ``max_side``, level-0 px
        per overview px), read from the coarsest level no larger than needed, every
        ``step``-th pixel. Unreadable data raise ``JobError`` with one line."""
        h0, w0 = self.shape[:2]
        level = self.best_level_for_downsample(max(1.0, max(h0, w0) / max_side))
        lv = self.levels[level]
        step = max(1, int(np.ceil(max(lv.shape[:2]) / max_side)))
        try:
            small = np.asarray(lv[::step, ::step].compute())
        except Exception as e:  # corrupt or truncated tiles surface here, not at open time
            raise JobError(f"cannot read an overview of {self.name}: {_first_line(e)}") from None
        return small, float(self.downsamples[level] * step)

    def overview_cost(self, max_side: int = 1024) -> int:
        """Pixels :meth:`read_overview` would decode: strided reads decode whole chunks, so the
        full area of the level it reads (huge for a big image without a pyramid)."""
        h0, w0 = self.shape[:2]
        lv = self.levels[self.best_level_for_downsample(max(1.0, max(h0, w0) / max_side))]
        return int(lv.shape[0]) * int(lv.shape[1])

    def read_sample(self, n: int = 64, size: int = 128) -> np.ndarray:
        """A mosaic [k * size, k * size, C] of about ``n`` windows of ``size`` px of level 0 spread
        evenly over the image (a bounded read for statistics when there is no small level)."""
        h0, w0 = self.shape[:2]
        k = max(1, int(round(np.sqrt(n))))
        s = min(size, h0, w0)
        ys = np.linspace(0, h0 - s, k).astype(int)
        xs = np.linspace(0, w0 - s, k).astype(int)
        rows = [np.concatenate([self.read_region(y, x, y + s, x + s) for x in xs], 1) for y in ys]
        return np.concatenate(rows, 0)

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "image"

    def require_rgb8(self, what: str = "this method") -> None:
        """Raise ``JobError`` unless the image is 8-bit RGB (what H&E methods need)."""
        if self.n_channels != 3:
            raise JobError(f"{what} needs an RGB H&E image; {self.name} has {self.n_channels} channel(s)")
        if self.dtype != np.uint8:
            raise JobError(f"{what} needs 8-bit RGB; {self.name} is {self.dtype} (convert it to uint8 first)")

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> "SlideImage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self) -> dict:
        """Format, levels, shapes, mpp: what ``histoai info`` prints."""
        return {
            "path": str(self.path) if self.path else None,
            "format": self.format,
            "backend": self.backend,
            "dtype": str(self.dtype),
            "levels": [
                {"shape": [int(v) for v in lv.shape], "downsample": round(d, 4),
                 "mpp": None if self.mpp is None else round(self.mpp * d, 6)}
                for lv, d in zip(self.levels, self.downsamples)
            ],
            "mpp": self.mpp,
            "magnification": self.magnification,
        }


def magnification_from_mpp(mpp: Optional[float]) -> Optional[float]:
    """Nominal objective power for a pixel size (10x ~ 1 µm/px), snapped to common objectives."""
    if not mpp:
        return None
    est = 10.0 / mpp
    return min((1.25, 2.5, 5, 10, 20, 40, 60, 80, 100), key=lambda m: abs(np.log(m / est)))


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def from_array(arr, mpp: Optional[float] = None, name: str = "image") -> SlideImage:
    """Wrap an in-memory or dask array [Y, X] or [Y, X, C] (e.g. a napari layer's data)."""
    import dask.array as da

    levels = arr if isinstance(arr, (list, tuple)) else [arr]
    out = []
    for lv in levels:
        lv = lv if isinstance(lv, da.Array) else da.from_array(np.asarray(lv) if not hasattr(lv, "chunks") else lv)
        if lv.ndim == 2:
            lv = lv[..., None]
        out.append(lv)
    img = SlideImage(path=Path(name), levels=out, mpp=mpp, backend="array", format="array")
    _validate(img)
    return img


def _validate(img: SlideImage) -> SlideImage:
    if not img.levels:
        raise JobError(f"{img.name} contains no image")
    lv = img.levels[0]
    if lv.ndim != 3:
        raise JobError(f"{img.name}: expected a 2D image (Y, X[, C]), got shape {tuple(lv.shape)}")
    if lv.shape[0] == 0 or lv.shape[1] == 0:
        raise JobError(f"{img.name} is empty (shape {tuple(lv.shape)})")
    if lv.shape[2] == 4:  # RGBA: drop alpha, as viewers do
        img.levels = [x[..., :3] for x in img.levels]
    return img
