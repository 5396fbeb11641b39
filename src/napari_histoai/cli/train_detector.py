"""``histoai train-detector``: train an AC-Former nuclei detector on images + points CSVs, or
(``--project DIR [DIR ...] --out NAME``) fine-tune one on correction projects (``<image>.histoai``
folders, or the images themselves) with mixed supervision."""

from __future__ import annotations

import argparse
import sys

from .options import (
    fraction_below_one,
    json_line,
    nonnegative_float,
    positive_float,
    positive_int,
    unit_float,
)

NAME = "train-detector"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help="train an AC-Former nuclei detector",
        description="Train an AC-Former point detector on RGB images and points CSVs (y,x,class; "
                    "same file stem as the image). Classes not in --classes (e.g. 'unlabeled') are "
                    "nuclei of unknown class: detection targets only.")
    p.add_argument("--images", help="folder of training images (or use --project)")
    p.add_argument("--points", help="folder of points CSVs named like the images")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--config", default="compact", choices=["compact", "paper", "tiny"])
    p.add_argument("--val-images", help="validation images (model selection)")
    p.add_argument("--val-points", help="validation points CSVs")
    p.add_argument("--mpp", type=positive_float, default=None, help="µm/px of the input images (folders of images, or project images whose files carry none; default: the model's)")
    p.add_argument("--classes", default=None, help="comma-separated class names (default: epithelial,inflammatory,fibroblast,others)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the config's)")
    p.add_argument("--views", choices=["aat", "affine", "crop", "none"], default=None, help="view generator")
    p.add_argument("--global-loss", choices=["on", "off"], default=None, help="loss from the global EMA network")
    p.add_argument("--fusestyle", choices=["on", "off"], default=None)
    p.add_argument("--fusestyle-partner", choices=["argmin", "random", "euclidean"], default=None)
    p.add_argument("--backbone", default=None, help="resnet18|resnet34|resnet50|convnext_tiny|convnext_base")
    p.add_argument("--backbone-weights", default=None, help="optional torchvision-format backbone weights (.safetensors or .pt)")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--stain-jitter", type=nonnegative_float, default=None, metavar="S",
                   help="stain augmentation in HED space of strength S (Tellez et al. 0.05; default 0 = off): more "
                        "robust to other labs' stains, at some cost to the classes on the training stain")
    p.add_argument("--eval-every", type=positive_int, default=250)
    p.add_argument("--log", default=None, help="append per-step JSON lines to this file")
    p.add_argument("--resume", action="store_true", help="continue the run saved next to --out")
    g = p.add_argument_group("fine-tuning on correction projects (mixed supervision)",
                             "--out, --steps (per EM round, default 250), --views, --global-loss, --fusestyle and "
                             "--lr (default 1e-4) apply too; --images/--points are not used")
    g.add_argument("--project", nargs="+", metavar="DIR",
                   help="project folders <image>.histoai (or the images) made with the 'Correct nuclei' dock")
    g.add_argument("--start-model", default=None, help="model to fine-tune (default: the project's model, else the bundled one)")
    g.add_argument("--rounds", type=positive_int, default=2, help="EM rounds (pseudo labels re-predicted each round)")
    g.add_argument("--pseudo-t", type=unit_float, default=None,
                   help="T: pseudo patches whose best score is below T are dropped (default 0.4: confident ones only)")
    g.add_argument("--pseudo-v", type=positive_float, default=4.0, help="V: pseudo weight = clip(score * V, 0, 1)")
    g.add_argument("--mix-ratio", default="4:1:1", help="R: fine:pseudo:negative crops per batch (paper 2:1:7)")
    g.add_argument("--pseudo", action="store_true",
                   help="pseudo labels from the start model outside reviewed regions: the default (kept for old scripts)")
    g.add_argument("--no-pseudo", action="store_true",
                   help="fine labels (and no-target regions) only, no pseudo labels")
    g.add_argument("--budget-seconds", type=nonnegative_float, default=0.0, help="CPU-time budget for the whole run (0 = none)")
    g.add_argument("--retune-threshold", action="store_true",
                   help="re-pick the score threshold (start +-0.05 .. +0.15) on the held-out reviewed regions "
                        "(default: keep the start model's; worth it only with large reviewed regions)")
    g.add_argument("--val-fraction", type=fraction_below_one, default=0.2, help="part of the reviewed regions held out for validation")
    return p


def build_config(args):
    from ..methods.detection.configs import get_config

    over = {}
    if args.steps:
        over["steps"] = args.steps
    if args.views:
        over["views"] = args.views
    if args.global_loss:
        over["global_loss"] = args.global_loss == "on"
    if args.fusestyle:
        over["fusestyle"] = args.fusestyle == "on"
    if args.fusestyle_partner:
        over["fusestyle_partner"] = args.fusestyle_partner
    if args.backbone:
        over["backbone"] = args.backbone
    if args.lr:
        over["lr"] = args.lr
    if args.stain_jitter is not None:
        over["hed_jitter"] = args.stain_jitter
    if args.classes:
        over["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    return get_config(args.config, **over)


def run(args) -> int:
    import torch

    if args.project:
        return run_project(args)
    if not (args.images and args.points):
        from ..errors import JobError

        raise JobError("give --images and --points (folders), or --project DIR for correction projects")

    from ..engine.devices import pick_device
    from ..engine.jobs import run_with_tqdm
    from ..errors import JobError
    from ..io.outputs import check_folder_output
    from ..methods.detection.data import load_folder
    from ..methods.detection.train import train_job

    check_folder_output(args.out)
    cfg = build_config(args)
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    data_mpp = args.mpp or cfg.mpp
    train = load_folder(args.images, args.points, cfg.classes, data_mpp, cfg.mpp)
    val = None
    if bool(args.val_images) != bool(args.val_points):
        raise JobError("give both --val-images and --val-points, or neither")
    if args.val_images:
        val = load_folder(args.val_images, args.val_points, cfg.classes, data_mpp, cfg.mpp)
    extra = {"training": {"data": f"{args.images} ({len(train)} images)", "command": " ".join(["histoai"] + sys.argv[1:]),
                          "config_name": args.config}}
    job = train_job(cfg, train, args.out, val=val, device=device, seed=args.seed, resume=args.resume,
                    eval_every=args.eval_every, log_path=args.log, backbone_weights=args.backbone_weights,
                    extra_config=extra)
    result = run_with_tqdm(job, desc="train-detector")
    print(json_line({"model": str(args.out), "classes": result["classes"], "mpp": result["mpp"]}))
    return 0


def run_project(args) -> int:
    """Fine-tune on the ``--project`` folders; prints a JSON summary on stdout."""
    from ..engine.jobs import run_with_tqdm
    from ..methods.detection.finetune.job import (
        RETUNE_STEPS,
        mixed_config,
        open_projects,
        train_corrections_job,
    )
    from ..errors import JobError
    from ..methods.detection.registry import default_detector

    if args.stain_jitter is not None:
        raise JobError("--stain-jitter is for training from --images/--points; fine-tuning on --project keeps the "
                       "start model's augmentation")
    projects = open_projects(args.project)
    start = args.start_model or projects[0].meta.get("model") or default_detector()
    if start == "classical":
        start = default_detector()
    onoff = {None: None, "on": True, "off": False}
    m = mixed_config(ratio=args.mix_ratio, rounds=args.rounds, steps=args.steps, T=args.pseudo_t, V=args.pseudo_v,
                     pseudo=not args.no_pseudo, budget_seconds=args.budget_seconds, val_fraction=args.val_fraction,
                     lr=args.lr, views=args.views, global_loss=onoff[args.global_loss], fusestyle=onoff[args.fusestyle],
                     **({"threshold_steps": RETUNE_STEPS} if args.retune_threshold else {}))
    extra = {"command": " ".join(["histoai"] + sys.argv[1:]), "projects": [str(p.root) for p in projects]}
    job = train_corrections_job(projects, start, args.out, m, device=args.device, seed=args.seed, extra_config=extra,
                                image_mpp=args.mpp)
    summary = run_with_tqdm(job, desc="train-detector --project")
    keys = ("model", "start_model", "val_before", "val", "selected_round", "threshold", "steps", "cpu_seconds")
    print(json_line({k: summary[k] for k in keys}))
    return 0
