"""``histoai train-detector --project DIR [DIR ...] --out NAME``: fine-tune a detector on
correction projects (``<image>.histoai`` folders, or the images themselves) with mixed
supervision. The lead wires :func:`add_project_args` / :func:`run_project` into the
``train-detector`` subcommand; options the subcommand already has (``--steps``, ``--views``,
``--global-loss``, ``--fusestyle``, ``--lr``, ``--log``, ``--device``, ``--seed``) are reused,
not redefined.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add(parser: argparse.ArgumentParser, flag: str, **kw) -> None:
    if flag not in parser._option_string_actions:  # shared with the folder-training options
        parser.add_argument(flag, **kw)


def add_project_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("training on correction projects (mixed supervision)")
    g.add_argument("--project", nargs="+", metavar="DIR",
                   help="project folders <image>.histoai (or the images) made with the 'Correct nuclei' dock")
    g.add_argument("--start-model", default=None, help="model to fine-tune (default: the project's model, else the bundled one)")
    g.add_argument("--rounds", type=int, default=2, help="EM rounds (pseudo labels re-predicted each round)")
    g.add_argument("--pseudo-t", type=float, default=None,
                   help="T: pseudo patches whose best score is below T are dropped (default: the model's score threshold)")
    g.add_argument("--pseudo-v", type=float, default=4.0, help="V: pseudo weight = clip(score * V, 0, 1)")
    g.add_argument("--mix-ratio", default="2:1:1", help="R: fine:pseudo:negative crops per batch (paper 2:1:7)")
    g.add_argument("--no-pseudo", action="store_true", help="fine labels (and no-target regions) only")
    g.add_argument("--budget-seconds", type=float, default=0.0, help="CPU-time budget for the whole run (0 = none)")
    g.add_argument("--val-fraction", type=float, default=0.2, help="part of the reviewed regions held out for validation")
    _add(parser, "--out", help="new model name (saved with the user models) or a folder path")
    _add(parser, "--steps", type=int, default=None, help="steps per EM round (default 60)")
    _add(parser, "--views", choices=["aat", "affine", "crop", "none"], default=None)
    _add(parser, "--global-loss", choices=["on", "off"], default=None)
    _add(parser, "--fusestyle", choices=["on", "off"], default=None)
    _add(parser, "--lr", type=float, default=None)
    _add(parser, "--device", default="auto")
    _add(parser, "--seed", type=int, default=0)
    return parser


def mixed_config(args):
    from ...errors import JobError
    from .train import MixedConfig

    try:
        ratio = tuple(float(v) for v in str(args.mix_ratio).replace(",", ":").split(":"))
    except ValueError:
        ratio = ()
    if len(ratio) != 3 or min(ratio) < 0 or sum(ratio) <= 0:
        raise JobError("--mix-ratio needs three numbers fine:pseudo:negative, e.g. 2:1:1")
    onoff = lambda v: None if v is None else v == "on"  # noqa: E731
    return MixedConfig(rounds=args.rounds, steps=getattr(args, "steps", None) or 60, T=args.pseudo_t, V=args.pseudo_v,
                       ratio=ratio, pseudo=not args.no_pseudo, budget_seconds=args.budget_seconds,
                       val_fraction=args.val_fraction, lr=getattr(args, "lr", None) or 1e-4,
                       views=getattr(args, "views", None) or "", global_loss=onoff(getattr(args, "global_loss", None)),
                       fusestyle=onoff(getattr(args, "fusestyle", None)))


def open_projects(paths) -> list:
    from ...errors import JobError
    from ...project import SUFFIX, Project

    out = []
    for p in paths:
        p = Path(p)
        if not p.name.endswith(SUFFIX) and not p.is_dir():
            p = Path(str(p) + SUFFIX)  # the image was given
        prj = Project(p)
        if not prj.exists():
            raise JobError(f"{p} is not a correction project (no points.csv / regions.geojson)")
        out.append(prj)
    return out


def run_project(args) -> int:
    """Run the project training; prints a JSON summary on stdout. Returns the exit code."""
    from ...errors import JobError
    from ...engine.jobs import run_with_tqdm
    from ..detection.registry import default_detector
    from .job import train_corrections_job

    try:
        if not args.project:
            raise JobError("give --project DIR")
        if not getattr(args, "out", None):
            raise JobError("give --out NAME for the new model")
        projects = open_projects(args.project)
        start = args.start_model or projects[0].meta.get("model") or default_detector()
        if start == "classical":
            start = default_detector()
        m = mixed_config(args)
        extra = {"command": " ".join(["histoai"] + sys.argv[1:]), "projects": [str(p.root) for p in projects]}
        job = train_corrections_job(projects, start, args.out, m, device=getattr(args, "device", "auto"),
                                    seed=getattr(args, "seed", 0), extra_config=extra)
        summary = run_with_tqdm(job, desc="train-detector --project")
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("model", "start_model", "val_before", "val", "steps", "cpu_seconds")}))
    return 0


def main(argv=None) -> int:  # ``python -m napari_histoai.methods.mixed.cli_support`` until wired
    p = argparse.ArgumentParser(prog="histoai train-detector --project")
    add_project_args(p)
    return run_project(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
