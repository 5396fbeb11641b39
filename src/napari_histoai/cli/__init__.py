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
SUBCOMMANDS = ["info", "detect", "train_detector", "segment", "train_adapt", "instances", "train_heatmap", "heatmap",
               "convert", "batch", "evaluate"]


def common_options(p: argparse.ArgumentParser) -> None:
    if "--device" not in p._option_string_actions:
        p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default: auto = CUDA, MPS, CPU)")
    if "--seed" not in p._option_string_actions:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``histoai detect: error: argument --mpp:
    must be > 0, got -1``) and exit code 2, without the usage block."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message.splitlines()[0] if message else 'bad arguments'}\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(prog="histoai", description="napari-histoai command line")
    parser.add_argument("--version", action="version", version=f"napari-histoai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
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
    """Run one command; every failure a user can cause is one line on stderr and exit code 2
    (an internal error is one line and exit code 1; ``HISTOAI_DEBUG=1`` shows its traceback)."""
    import os

    from ..errors import Cancelled, JobError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or a bad argument (2, already said)
        return int(e.code or 0)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    where = f"histoai {args.command}"
    try:
        return int(args.run(args) or 0)
    except JobError as e:
        print(f"{where}: error: {str(e).splitlines()[0] if str(e) else 'failed'}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print(f"{where}: cancelled", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{where}: error: out of memory (try a region, a smaller --batch-size, or a tiled pyramidal file)",
              file=sys.stderr)
        return 2
    except OSError as e:
        what = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"{where}: error: {what}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get("HISTOAI_DEBUG"):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"{where}: internal error: {type(e).__name__}{': ' + first if first else ''} "
              "(set HISTOAI_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
