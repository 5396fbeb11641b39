"""``histoai train-adapt --source-images DIR --source-masks DIR --target-images DIR --out MODEL``:
train a CyC-PDAM nuclei instance segmenter for H&E from labelled fluorescence (pixel-level
CycleGAN + inpainting, feature-level discriminators, task re-weighting). Without the source
options the bundled CC0 fluorescence set is the source. The summary as JSON on stdout."""

from __future__ import annotations

import argparse
import sys

from .options import json_line, positive_float, positive_int

CONFIGS = ["compact", "paper"]  # methods.adaptation.config.PRESETS
# --no-X switches -> AdaptConfig fields (the paper's named components)
COMPONENTS = {
    "cyclegan": "CycleGAN fluorescence -> H&E translation (else inverted grey images)",
    "inpaint": "nuclei inpainting of the synthesised images",
    "img-da": "image-level discriminator",
    "ins-da": "instance-level discriminator",
    "sem": "semantic head and semantic-level discriminator",
    "tr": "task re-weighting",
}


def _multiple_of(k: int):
    def parse(text: str) -> int:
        v = positive_int(text)
        if v % k:
            raise argparse.ArgumentTypeError(f"must be a multiple of {k}, got {text}")
        return v
    return parse


def add_parser(sub):
    # the adaptation package (torch) is imported only when the command runs
    p = sub.add_parser("train-adapt",
                       help="train an H&E nuclei instance segmenter from labelled fluorescence (CyC-PDAM)")
    p.add_argument("--source-images", default=None, metavar="DIR",
                   help="folder of single-channel fluorescence images (default: the bundled CC0 set)")
    p.add_argument("--source-masks", default=None, metavar="DIR",
                   help="folder of their instance masks (integer ids, 0 = background), named like the images")
    p.add_argument("--target-images", required=True, metavar="DIR",
                   help="folder of unlabelled RGB H&E images (tiles or regions; PNG/JPEG/TIFF)")
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument("--config", choices=CONFIGS, default="compact",
                   help="compact (small networks, minutes to an hour on a CPU) or paper (ResNet-50-GN, 20k steps)")
    p.add_argument("--steps", type=positive_int, default=None, help="Mask R-CNN training steps (default per config)")
    p.add_argument("--gan-steps", type=positive_int, default=None, help="CycleGAN training steps (default per config)")
    p.add_argument("--crop", type=_multiple_of(32), default=None, help="Mask R-CNN training crop, px (multiple of 32)")
    p.add_argument("--gan-crop", type=_multiple_of(4), default=None, help="CycleGAN training crop, px (multiple of 4)")
    p.add_argument("--warmup", type=positive_int, default=None, help="learning-rate warm-up steps")
    p.add_argument("--target-mpp", type=positive_float, default=None, metavar="UM_PER_PX",
                   help="pixel size of the target images in µm/px, for files that carry none (PNG, JPEG) or "
                        "to override the files'; without it such images are assumed to be at the model's 0.5 µm/px")
    for name, what in COMPONENTS.items():
        p.add_argument(f"--no-{name}", dest=f"no_{name.replace('-', '_')}", action="store_true",
                       help=f"switch off: {what}")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="keep periodic training checkpoints in DIR and continue from the last one found there")
    return p


def build_config(args):
    from ..methods.adaptation import preset

    over = {"seed": args.seed}
    for opt in ("steps", "gan_steps", "crop", "gan_crop", "warmup"):
        if getattr(args, opt) is not None:
            over[opt] = getattr(args, opt)
    for name in COMPONENTS:
        if getattr(args, f"no_{name.replace('-', '_')}"):
            over[name.replace("-", "_")] = False
    return preset(args.config, **over).validate()


def run(args) -> int:
    from ..engine.devices import seed_everything
    from ..engine.jobs import tqdm_progress
    from ..errors import JobError
    from ..tasks import train_adapt

    if (args.source_images is None) != (args.source_masks is None):
        raise JobError("give both --source-images and --source-masks, or neither (the bundled fluorescence set)")
    seed_everything(args.seed)
    cfg = build_config(args)
    with tqdm_progress("train-adapt") as show:
        s = train_adapt(args.source_images, args.source_masks, args.target_images, args.out, config=cfg,
                        target_mpp=args.target_mpp, device=args.device, checkpoint_dir=args.resume,
                        on_progress=show)
    print(f"trained ({s['config']}, {s['gan_steps']} CycleGAN + {s['steps']} Mask R-CNN steps) on {s['sources']} "
          f"fluorescence images ({s['source_nuclei']} nuclei) -> {s['targets']} H&E targets in {s['seconds']:.0f} s "
          f"-> {s['out']}", file=sys.stderr)
    for note in s["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(json_line(s))
    return 0
