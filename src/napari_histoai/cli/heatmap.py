"""``histoai heatmap SLIDE --model MODEL --out heatmap.ome.tif``: the tumour heatmap of a slide
(pyramidal OME-TIFF aligned in µm with the slide); the slide score and the top-K boxes as JSON on
stdout."""

from __future__ import annotations

import sys

from .options import json_line, mpp_option, parse_region


def add_parser(sub):
    p = sub.add_parser("heatmap", help="tumour heatmap and slide score of a slide with a trained heatmap model")
    p.add_argument("image", help="slide or image file (RGB H&E)")
    p.add_argument("--model", required=True, help="heatmap model (name or folder, from train-heatmap)")
    p.add_argument("--out", required=True, help="output heatmap .ome.tif (float32 tumour probability 0..1)")
    p.add_argument("--region", default=None, help="y0,x0,y1,x1 level-0 px: only this region")
    mpp_option(p)
    return p


def run(args) -> int:
    from ..engine.devices import seed_everything
    from ..engine.jobs import tqdm_progress
    from ..tasks import heatmap_file

    seed_everything(args.seed)
    with tqdm_progress("heatmap") as show:
        s = heatmap_file(args.image, args.out, model=args.model, mpp=args.mpp, region=parse_region(args.region),
                         device=args.device, on_progress=show)
    hm = "" if s["heatmap_mpp"] is None else f" at {s['heatmap_mpp']:g} µm/px"
    print(f"slide score {s['score']:.3f} ({s['call']}; threshold {s['threshold']:.3f}); heatmap{hm} -> {s['out']}",
          file=sys.stderr)
    for note in s["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(json_line(s))
    return 0
