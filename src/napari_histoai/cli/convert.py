"""``histoai convert IMAGE --out slide.ome.tif``: any readable image -> tiled pyramidal OME-TIFF
(keeps the pixel size). Streams tile by tile, so images larger than memory convert too."""

from __future__ import annotations

import sys

from ..errors import JobError


def add_parser(sub):
    p = sub.add_parser("convert", help="write a tiled pyramidal OME-TIFF (fast to open in napari)")
    p.add_argument("image", help="input image or slide")
    p.add_argument("--out", required=True, help="output .ome.tif")
    p.add_argument("--mpp", type=float, default=None, help="µm per pixel, when the input does not say")
    p.add_argument("--tile", type=int, default=256)
    return p


def run(args) -> int:
    from ..io import open_image
    from ..io.writers import write_pyramid_ometiff

    if not str(args.out).lower().endswith((".ome.tif", ".ome.tiff")):
        raise JobError("--out must end with .ome.tif")
    with open_image(args.image) as img:
        lv = img.levels[0]
        data = lv[..., 0] if img.n_channels == 1 else lv
        out = write_pyramid_ometiff(args.out, data, mpp=args.mpp or img.mpp, tile=args.tile)
    print(f"wrote {out}", file=sys.stderr)
    return 0
