"""``histoai instances IMAGE [--model NAME|PATH] --out labels.tif [--region y0,x0,y1,x1] [--mpp UM]``:
nuclei instance labels of an H&E image with a CyC-PDAM adapted segmenter (from ``train-adapt``;
default the bundled one) as OME-TIFF; the summary as JSON on stdout."""

from __future__ import annotations

import sys

from .options import json_line, mpp_option, parse_region


def add_parser(sub):
    p = sub.add_parser("instances", help="nuclei instance labels with an adapted (CyC-PDAM) segmenter")
    p.add_argument("image", help="slide or image file (RGB H&E)")
    p.add_argument("--out", required=True, help="output labels .tif / .ome.tif (uint16 or uint32 instance ids)")
    p.add_argument("--model", default=None,
                   help="adapted segmenter: bundled/user name or model folder from train-adapt "
                        "(default: the bundled one)")
    p.add_argument("--region", default=None, help="y0,x0,y1,x1 in level-0 pixels (default: whole image, tissue only)")
    p.add_argument("--all-tiles", action="store_true", help="also process background (non-tissue) tiles")
    mpp_option(p)
    return p


def run(args) -> int:
    from ..engine.devices import seed_everything
    from ..engine.jobs import tqdm_progress
    from ..tasks import instances_file

    seed_everything(args.seed)
    region = parse_region(args.region)
    with tqdm_progress("instances") as show:
        s = instances_file(args.image, args.out, model=args.model, region=region, mpp=args.mpp,
                           tissue_only=not args.all_tiles and region is None, device=args.device, on_progress=show)
    where = f" (region {args.region})" if args.region else ""
    print(f"{s['n']} nuclei{where} with {s['model']} at {s['mpp_text']} -> {s['out']}", file=sys.stderr)
    for note in s["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(json_line(s))
    return 0
