"""npe2 reader and sample-data contributions. Returns layer-data tuples; imports no napari."""

from __future__ import annotations

from ..errors import JobError
from .image import SlideImage
from .open import open_image

_EXT = (".svs", ".ndpi", ".tif", ".tiff", ".scn", ".mrxs", ".vms", ".bif", ".zarr", ".btf", ".qptiff")
# single-level images larger than this (px per side) get lazy display levels
_DISPLAY_PYRAMID_FROM = 4096


def display_levels(img: SlideImage) -> list:
    """The image's levels, plus lazy 2x-strided levels when a big image has no pyramid, so
    napari never has to draw a full-resolution overview."""
    levels = list(img.levels)
    if len(levels) == 1:
        k = 1
        while max(img.shape[:2]) / 2 ** k >= 1024 and max(img.shape[:2]) > _DISPLAY_PYRAMID_FROM:
            levels.append(img.levels[0][:: 2 ** k, :: 2 ** k])
            k += 1
    return levels


def layer_data(img: SlideImage, name: str | None = None) -> list[tuple]:
    """[(data, kwargs, "image")] for napari: multiscale when there are several levels,
    ``scale`` in µm when the pixel size is known."""
    levels = display_levels(img)
    rgb = img.n_channels in (3, 4)
    data = levels if len(levels) > 1 else levels[0]
    if not rgb:
        data = [lv[..., 0] for lv in levels] if len(levels) > 1 else levels[0][..., 0]
    kwargs = {
        "name": name or (img.path.name if img.path else "image"),
        "rgb": rgb,
        "multiscale": len(levels) > 1,
        "metadata": {"histoai_path": str(img.path) if img.path else None, "mpp": img.mpp,
                     "magnification": img.magnification, "format": img.format},
    }
    if img.mpp:
        kwargs["scale"] = (img.mpp, img.mpp)
        kwargs["units"] = ("µm", "µm")
    return [(data, kwargs, "image")]


def get_reader(path):
    """npe2 reader hook: a reader for slides/TIFFs/OME-Zarr, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = str(path).lower().rstrip("/")
    if not p.endswith(_EXT):
        return None
    return read_image


def read_image(path):
    """Open ``path`` lazily; errors become one-line exceptions napari shows as notifications."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    try:
        img = open_image(path)
    except JobError as e:
        raise ValueError(str(e)) from None
    return layer_data(img)


def sample_he():
    """Bundled sample: 1024 x 1024 px of CMU-1 (Aperio, 20x, 0.499 µm/px)."""
    from ..bundled import sample_path

    img = open_image(sample_path())
    return layer_data(img, name="H&E sample (CMU-1)")
