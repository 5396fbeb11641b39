"""``histoai segment IMAGE --out labels.tif``: train the self-supervised contrastive segmenter
on IMAGE (or apply a saved one with ``--model``), then write instance labels as OME-TIFF."""

from __future__ import annotations

import sys

from ..errors import JobError
from .options import mpp_option, parse_region, positive_float, positive_int


def _channel(text: str):
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise JobError(f"--channel must be 'auto' or a channel index, got {text!r}") from None


def _threshold(text):
    if text is None or text == "auto":
        return text
    try:
        t = float(text)
    except ValueError:
        raise JobError(f"--threshold must be a number in (0, 1) or 'auto', got {text!r}") from None
    if not 0 < t < 1:
        raise JobError(f"--threshold must be in (0, 1), got {t}")
    return t


def add_parser(sub):
    from ..methods.contrastive.train import ContrastiveConfig as C

    p = sub.add_parser("segment", help="self-supervised nuclei segmentation: train on IMAGE, write instance labels")
    p.add_argument("image", help="slide or image file (RGB H&E)")
    p.add_argument("--out", required=True, help="output labels .tif / .ome.tif (uint16 or uint32 instance ids)")
    p.add_argument("--model", default=None, help="apply a saved segmenter (name or folder) instead of training")
    p.add_argument("--save-model", default=None, metavar="DIR", help="also save the trained model to this folder")
    p.add_argument("--region", default=None, help="y0,x0,y1,x1 level-0 px: train and segment only there")
    p.add_argument("--restarts", type=positive_int, default=C.restarts, help=f"training restarts, best kept (default {C.restarts})")
    p.add_argument("--steps", type=positive_int, default=C.steps, help=f"optimiser steps per restart (default {C.steps})")
    p.add_argument("--channels", type=positive_int, default=C.n_channels, help=f"K confidence maps (default {C.n_channels})")
    p.add_argument("--patch-size", type=positive_int, default=C.patch_size)
    p.add_argument("--patches", type=positive_int, default=C.patches_per_image, help="patches per channel and crop")
    p.add_argument("--similarity", choices=["mse", "ce", "cosine"], default=C.similarity)
    p.add_argument("--downsample", type=positive_float, default=C.downsample, help="work at 1/N of the input resolution")
    p.add_argument("--channel", default="auto", help="nuclei channel: 'auto' (best hematoxylin agreement) or an index")
    p.add_argument("--threshold", default=None, help="confidence threshold in (0, 1) or 'auto' (Otsu); default 0.5 or the model's")
    p.add_argument("--min-distance", type=positive_int, default=5, help="min px between the centres of split nuclei")
    p.add_argument("--min-size", type=positive_int, default=20, help="drop nuclei smaller than this (px)")
    mpp_option(p)
    return p


def run(args) -> int:
    from ..engine.devices import seed_everything
    from ..engine.jobs import tqdm_progress
    from ..methods.contrastive import ContrastiveConfig
    from ..tasks import segment_file

    seed_everything(args.seed)
    threshold = _threshold(args.threshold)
    cfg = None
    if not args.model:
        cfg = ContrastiveConfig(
            n_channels=args.channels, patch_size=args.patch_size, patches_per_image=args.patches,
            similarity=args.similarity, steps=args.steps, restarts=args.restarts,
            downsample=args.downsample, seed=args.seed, threshold=0.5 if threshold is None else threshold,
        ).validate()
    with tqdm_progress("segment") as show:
        s = segment_file(args.image, args.out, model=args.model, config=cfg, save_model=args.save_model,
                         region=parse_region(args.region), channel=_channel(args.channel), threshold=threshold,
                         min_distance=args.min_distance, min_size=args.min_size, mpp=args.mpp,
                         device=args.device, on_progress=show)
    if s["trained"]:
        print(f"trained in {s['train_seconds']:.0f} s; kept restart {s['restart']} step {s['step']} "
              f"(hematoxylin agreement {s['selection_score']:.2f}); nuclei channel {s['channel']}", file=sys.stderr)
    if s.get("model"):
        print(f"model saved to {s['model']}", file=sys.stderr)
    where = f" (region {args.region})" if args.region else ""
    print(f"{s['n']} nuclei{where} at {s['mpp_text']} -> {s['out']}", file=sys.stderr)
    for note in s["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0
