"""``histoai info IMAGE``: format, levels, shapes, µm per pixel."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("info", help="show format, levels, shapes and pixel size of an image or slide")
    p.add_argument("image", help="slide or image file (.svs, .tif, .ome.tif, .ndpi, .zarr, .png, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def run(args) -> int:
    from ..io import open_image

    with open_image(args.image) as img:
        info = img.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}\n  format: {info['format']} (read with {info['backend']}), dtype {info['dtype']}")
    mpp = f"{info['mpp']:.4f} µm/px" if info["mpp"] else "unknown"
    mag = f"{info['magnification']:g}x" if info["magnification"] else "unknown"
    print(f"  pixel size: {mpp}, magnification: {mag}")
    for i, lv in enumerate(info["levels"]):
        h, w, c = lv["shape"]
        extra = f", {lv['mpp']:.4f} µm/px" if lv["mpp"] else ""
        print(f"  level {i}: {w} x {h} px, {c} channel(s), downsample {lv['downsample']:g}{extra}")
    return 0
