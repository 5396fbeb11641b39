"""``histoai segment IMAGE --out labels.tif``: self-supervised nuclei instance labels as OME-TIFF.

``--method selftrain`` (the default) trains a small U-Net on IMAGE from its hematoxylin prior;
``--method contrastive`` trains the paper's patch-contrastive segmenter (Boserup & Selvan 2023)
with its own options. ``--model`` applies a saved segmenter of either kind instead of training
(its kind decides the method)."""

from __future__ import annotations

import sys

from ..errors import JobError
from .options import mpp_option, parse_region, positive_float, positive_int

# options of the contrastive segmenter only: given with the self-trained one, they are refused
CONTRASTIVE_ONLY = {"restarts": "--restarts", "channels": "--channels", "patch_size": "--patch-size",
                    "patches": "--patches", "similarity": "--similarity", "downsample": "--downsample",
                    "channel": "--channel"}


def _channel(text):
    if text is None or text == "auto":
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
    from ..methods.selftrain.config import SelfTrainConfig as S

    p = sub.add_parser("segment", help="self-supervised nuclei segmentation: train on IMAGE, write instance labels")
    p.add_argument("image", help="slide or image file (RGB H&E)")
    p.add_argument("--out", required=True, help="output labels .tif / .ome.tif (uint16 or uint32 instance ids)")
    p.add_argument("--method", choices=["selftrain", "contrastive"], default=None,
                   help="selftrain (default): a small U-Net trained on the image from its hematoxylin prior; "
                        "contrastive: the paper's patch-contrastive segmenter. With --model, the model's kind")
    p.add_argument("--model", default=None, help="apply a saved segmenter (name or folder, either method) instead of "
                                                 "training")
    p.add_argument("--save-model", default=None, metavar="DIR", help="also save the trained model to this folder")
    p.add_argument("--region", default=None, help="y0,x0,y1,x1 level-0 px: train and segment only there")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"optimiser steps (default: selftrain {S.steps}, contrastive {C.steps} per restart)")
    p.add_argument("--threshold", default=None,
                   help=f"nuclei probability in (0, 1) (default {S.threshold} or the model's); contrastive also "
                        "'auto' (Otsu)")
    p.add_argument("--min-distance", type=positive_int, default=None, metavar="PX",
                   help=f"min px between the centres of split nuclei (default: selftrain {S.min_distance_um:g} µm, "
                        "contrastive 5 px of its working grid)")
    p.add_argument("--min-size", type=positive_int, default=None, metavar="PX",
                   help=f"drop nuclei smaller than this many px (default: selftrain {S.min_size_um2:g} µm², "
                        "contrastive 20)")
    g = p.add_argument_group("contrastive segmenter only (--method contrastive)")
    g.add_argument("--restarts", type=positive_int, default=None, help=f"training restarts, best kept (default {C.restarts})")
    g.add_argument("--channels", type=positive_int, default=None, help=f"K confidence maps (default {C.n_channels})")
    g.add_argument("--patch-size", type=positive_int, default=None, help=f"default {C.patch_size}")
    g.add_argument("--patches", type=positive_int, default=None,
                   help=f"patches per channel and crop (default {C.patches_per_image})")
    g.add_argument("--similarity", choices=["mse", "ce", "cosine"], default=None, help=f"default {C.similarity}")
    g.add_argument("--downsample", type=positive_float, default=None,
                   help=f"work at 1/N of the input resolution (default {C.downsample:g})")
    g.add_argument("--channel", default=None, help="nuclei channel: 'auto' (best hematoxylin agreement, the default) "
                                                    "or an index")
    mpp_option(p)
    return p


def _or(value, default):
    return default if value is None else value


def run(args) -> int:
    from ..engine.devices import seed_everything
    from ..engine.jobs import tqdm_progress
    from ..methods.contrastive import ContrastiveConfig
    from ..methods.selftrain import SelfTrainConfig
    from ..tasks import segment_file, segment_method

    seed_everything(args.seed)
    threshold = _threshold(args.threshold)
    method = segment_method(args.method, args.model)
    if method == "selftrain":
        given = [flag for key, flag in CONTRASTIVE_ONLY.items() if getattr(args, key) is not None]
        if given:
            raise JobError(f"{given[0]} is an option of --method contrastive; the self-trained segmenter (the "
                           "default) does not take it")
        if threshold == "auto":
            raise JobError("--threshold auto is for --method contrastive; give a probability in (0, 1)")
    cfg = None
    if not args.model and method == "selftrain":
        d = SelfTrainConfig()
        cfg = SelfTrainConfig(steps=_or(args.steps, d.steps), seed=args.seed).validate()
    elif not args.model:
        d = ContrastiveConfig()
        cfg = ContrastiveConfig(
            n_channels=_or(args.channels, d.n_channels), patch_size=_or(args.patch_size, d.patch_size),
            patches_per_image=_or(args.patches, d.patches_per_image), similarity=_or(args.similarity, d.similarity),
            steps=_or(args.steps, d.steps), restarts=_or(args.restarts, d.restarts),
            downsample=_or(args.downsample, d.downsample), seed=args.seed,
            threshold=0.5 if threshold is None else threshold,
        ).validate()
    with tqdm_progress("segment") as show:
        s = segment_file(args.image, args.out, method=method, model=args.model, config=cfg,
                         save_model=args.save_model, region=parse_region(args.region), channel=_channel(args.channel),
                         threshold=threshold, min_distance=args.min_distance, min_size=args.min_size, mpp=args.mpp,
                         device=args.device, on_progress=show)
    where = f" (region {args.region})" if args.region else ""
    if method == "selftrain":
        how = (f"self-trained U-Net, {s['steps']} steps in {s['train_seconds']:.0f} s, final loss {s['loss']}"
               if s["trained"] else f"self-trained U-Net {s['model_used']}")
        print(f"{s['n']} nuclei{where} at {s['mpp_text']} -> {s['out']} ({how}, threshold {s['threshold']:g})",
              file=sys.stderr)
    else:
        if s["trained"]:
            print(f"trained in {s['train_seconds']:.0f} s; kept restart {s['restart']} step {s['step']} "
                  f"(hematoxylin agreement {s['selection_score']:.2f}); nuclei channel {s['channel']}",
                  file=sys.stderr)
        print(f"{s['n']} nuclei{where} at {s['mpp_text']} -> {s['out']}", file=sys.stderr)
    if s.get("model"):
        print(f"model saved to {s['model']}", file=sys.stderr)
    for note in s["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0
