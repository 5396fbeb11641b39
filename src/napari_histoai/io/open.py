"""``open_image``: the factory that picks a back end for a file (tifffile -> zarr -> dask for
TIFF/OME-TIFF/SVS/NDPI pyramids and plain big TIFFs, OpenSlide for formats tifffile cannot read
when it is installed, OME-Zarr, Pillow for PNG/JPEG) and validates what it returns."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import JobError
from .image import SlideImage, _first_line, _validate


def open_image(path: str | os.PathLike) -> SlideImage:
    """Open a slide or image lazily. Raises ``JobError`` (one line) for missing, corrupt,
    truncated, empty or unsupported files."""
    p = Path(path)
    if not p.exists():
        raise JobError(f"no such file: {p}")
    low = p.name.lower()
    try:
        if p.is_dir() or low.endswith(".zarr"):
            from .zarr_backend import open_ome_zarr

            return _validate(open_ome_zarr(p))
        if low.endswith((".png", ".jpg", ".jpeg", ".bmp")):
            from .pillow_backend import open_pillow

            return _validate(open_pillow(p))
        if p.stat().st_size == 0:
            raise JobError(f"{p.name} is an empty file")
        tiff_error = None
        if low.endswith((".tif", ".tiff", ".svs", ".ndpi", ".btf", ".tf8", ".scn", ".bif", ".qptiff")):
            from .tiff_backend import open_tiff

            try:
                return _validate(open_tiff(p))
            except JobError:
                raise
            except Exception as e:
                tiff_error = e
        from .openslide_backend import open_openslide, openslide_available

        if openslide_available():
            try:
                return _validate(open_openslide(p))
            except JobError:
                raise
            except Exception as e:
                if tiff_error is None:
                    tiff_error = e
        if tiff_error is not None:
            raise JobError(f"cannot read {p.name}: {_first_line(tiff_error)} (corrupt, truncated or unsupported)")
        raise JobError(f"unsupported file type: {p.name}")
    except JobError:
        raise
    except MemoryError:
        raise JobError(f"{p.name} is too large to load into memory; convert it to a tiled pyramidal TIFF") from None
    except Exception as e:
        raise JobError(f"cannot read {p.name}: {_first_line(e)}") from None
