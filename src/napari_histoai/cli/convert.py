"""``histoai convert IMAGE --out slide.ome.tif``: any readable image -> tiled pyramidal OME-TIFF
(keeps the pixel size). Streams tile by tile, so images larger than memory convert too."""

from __future__ import annotations

import sys

from ..errors import JobError
from .options import mpp_option, tile_size


def add_parser(sub):
    p = sub.add_parser("convert", help="write a tiled pyramidal OME-TIFF (fast to open in napari)")
    p.add_argument("image", help="input image or slide")
    p.add_argument("--out", required=True, help="output .ome.tif")
    mpp_option(p)
    p.add_argument("--tile", type=tile_size, default=256, help="tile side in px, a multiple of 16 (default 256)")
    return p


def run(args) -> int:
    from ..io import open_image
    from ..io.outputs import check_output, output_lock
    from ..io.writers import write_pyramid_ometiff

    out = check_output(args.out, (".ome.tif", ".ome.tiff"), [args.image])
    with output_lock(out), open_image(args.image) as img:
        lv = img.levels[0]
        data = lv[..., 0] if img.n_channels == 1 else lv
        try:
            out = write_pyramid_ometiff(out, data, mpp=args.mpp or img.mpp, tile=args.tile)
        except (OSError, JobError):
            raise
        except Exception as e:  # the writer only reads the input: corrupt or truncated tile data
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise JobError(f"cannot read pixels of {img.name}: {first}") from None
    print(f"wrote {out}", file=sys.stderr)
    return 0
