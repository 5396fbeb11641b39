"""``histoai batch {detect,segment,instances,heatmap} INPUTS... --out DIR [--scheduler ADDRESS] [--workers N]
[--threads-per-worker T]``: the same per-file tasks over many slides on dask.distributed (a
LocalCluster by default), one output and one JSON record (``DIR/records/``) per file, resumable,
a progress bar on stderr and ``DIR/summary.csv``; exit code 2 when any file failed."""

from __future__ import annotations

import sys

from .options import mpp_option, positive_int


def add_parser(sub):
    p = sub.add_parser("batch", help="run detect, segment, instances or heatmap over many files on dask.distributed")
    p.add_argument("task", choices=["detect", "segment", "instances", "heatmap"], help="what to run on every file")
    p.add_argument("inputs", nargs="+", help="slides or images, or folders of them")
    p.add_argument("--out", required=True, help="folder for the results, their records (records/) and summary.csv")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running dask scheduler (tcp://host:8786) whose workers see the same paths; "
                        "default: a local cluster on this machine")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="local worker processes (default: half the cores); each runs one file at a time")
    p.add_argument("--threads-per-worker", "--threads", dest="threads_per_worker", type=positive_int, default=None,
                   metavar="T",
                   help="threads of each local worker, all used by torch (default 1); with --scheduler: torch "
                        "threads per file")
    p.add_argument("--model", default=None, help="model name or folder (detect: default the bundled one; "
                                                 "segment: apply a saved segmenter instead of training on each "
                                                 "file; instances: an adapted segmenter from train-adapt, default "
                                                 "the bundled one; heatmap: required)")
    p.add_argument("--format", choices=["csv", "geojson"], default="csv", help="detect output format")
    p.add_argument("--fast", action="store_true", help="detect: the model's dense head alone (as histoai detect --fast)")
    p.add_argument("--tta", action="store_true", help="detect: test-time flips (as histoai detect --tta)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-run every file (default: skip files whose record shows the same model and options)")
    mpp_option(p)
    return p


def run(args) -> int:
    from ..batch import RECORDS, SUMMARY, batch_run
    from ..errors import JobError

    if args.task == "heatmap" and not args.model:
        raise JobError("histoai batch heatmap needs --model (a tumour heatmap model name or folder)")
    if args.fast and args.task != "detect":
        raise JobError(f"--fast is a detect option, not one of histoai batch {args.task}")
    options = {"model": args.model, "mpp": args.mpp, "device": args.device}
    if args.fast:  # only when set: records of earlier runs (no such option) still match a plain run
        options["fast"] = True
    if args.tta:
        if args.task != "detect":
            raise JobError(f"--tta is a detect option, not one of histoai batch {args.task}")
        options["tta"] = True
    suffix = f".{args.format}" if args.task == "detect" else None
    rows = batch_run(args.task, args.inputs, args.out, options=options, suffix=suffix, scheduler=args.scheduler,
                     workers=args.workers, threads_per_worker=args.threads_per_worker, overwrite=args.overwrite,
                     progress=True)
    counts = {k: sum(r["status"] == k for r in rows) for k in ("done", "skipped", "error")}
    print(f"{counts['done']} done, {counts['skipped']} skipped (done before), {counts['error']} failed "
          f"-> {args.out}/{SUMMARY} (records in {args.out}/{RECORDS}/)", file=sys.stderr)
    return 2 if counts["error"] else 0
