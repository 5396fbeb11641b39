"""``histoai batch {detect,segment} INPUTS... --out DIR [--scheduler ADDRESS] [--workers N]``: the
same per-file tasks over many slides on dask.distributed (a LocalCluster by default), resumable,
with ``DIR/summary.csv``."""

from __future__ import annotations

import sys

from .options import mpp_option, positive_int


def add_parser(sub):
    p = sub.add_parser("batch", help="run detect or segment over many files on dask.distributed")
    p.add_argument("task", choices=["detect", "segment"], help="what to run on every file")
    p.add_argument("inputs", nargs="+", help="slides or images, or folders of them")
    p.add_argument("--out", required=True, help="folder for the results and summary.csv")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running dask scheduler (tcp://host:8786); default: a local cluster on this machine")
    p.add_argument("--workers", type=positive_int, default=None, help="local worker processes (default: half the cores)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--model", default=None, help="model name or folder (detect: default the bundled one; "
                                                 "segment: apply a saved segmenter instead of training on each file)")
    p.add_argument("--format", choices=["csv", "geojson"], default="csv", help="detect output format")
    p.add_argument("--overwrite", action="store_true", help="re-run files whose output exists (default: skip them)")
    mpp_option(p)
    return p


def run(args) -> int:
    from ..batch import batch_run

    options = {"model": args.model, "mpp": args.mpp, "device": args.device}
    suffix = f".{args.format}" if args.task == "detect" else None

    def show(row, done, total):
        what = f"{row.get('n')} nuclei" if row["status"] == "done" else row.get("error", "")
        print(f"[{done}/{total}] {row['status']}: {row['image']} {what}", file=sys.stderr)

    rows = batch_run(args.task, args.inputs, args.out, options=options, suffix=suffix, scheduler=args.scheduler,
                     workers=args.workers, threads_per_worker=args.threads, overwrite=args.overwrite, on_file=show)
    counts = {k: sum(r["status"] == k for r in rows) for k in ("done", "skipped", "error")}
    print(f"{counts['done']} done, {counts['skipped']} skipped (output exists), {counts['error']} failed "
          f"-> {args.out}/summary.csv", file=sys.stderr)
    return 2 if counts["error"] else 0
