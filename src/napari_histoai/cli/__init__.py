"""``histoai``: the same jobs as the dock widgets, from the shell (progress on stderr).

Each subcommand lives in its own module of this package exposing ``add_parser(subparsers)``
(which registers the subcommand and sets ``func``) and a ``run(args) -> int``. Every command
accepts ``--device`` and ``--seed``; bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..engine.devices import DEVICE_CHOICES

# module names (in this package) that provide subcommands, in help order
SUBCOMMANDS = ["info", "detect", "train_detector", "segment", "convert"]


def common_options(p: argparse.ArgumentParser) -> None:
    if "--device" not in p._option_string_actions:
        p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default: auto = CUDA, MPS, CPU)")
    if "--seed" not in p._option_string_actions:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="histoai", description="napari-histoai command line")
    parser.add_argument("--version", action="version", version=f"napari-histoai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:  # a subcommand not built yet
            if e.name and e.name.endswith(name):
                continue
            raise
        sp = mod.add_parser(sub)
        common_options(sp)
        sp.set_defaults(run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import Cancelled, JobError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except JobError as e:
        print(f"histoai {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print(f"histoai {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
