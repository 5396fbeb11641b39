#!/usr/bin/env python
"""Train the plain dense-map peer (methods/detection/densemap.py) on CRCHistoPhenotypes train.

Selection never sees val: every 7th training tile (sorted by name: 10 of 70) is held out as the
selection split, the network trains on the other 60, and the score threshold is picked on the
selection split (F_d + mean F_c over a grid). val is then scored by benchmarks/bench_detection.py.

    python scripts/train_densemap.py --out runs/densemap/s0 --seed 0 --steps 4000 --threads 2

Resumable: the training state is saved to ``<out>.ckpt/`` every 250 steps; the same command
resumes there after an interruption.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "crchisto").resolve()
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="config override key=json")
    ap.add_argument("--restamp", action="store_true",
                    help="no training: give the saved model at --out the training stain target and re-pick its "
                         "threshold on the selection split (for models saved before stain matching)")
    args = ap.parse_args()

    import torch

    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.densemap import (
        DenseMapConfig,
        DenseMapDetector,
        save_densemap,
        train_densemap_job,
    )
    from napari_histoai.methods.detection.selection import (
        pick_threshold,
        selection_split,
    )

    torch.set_num_threads(args.threads)
    over = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = DenseMapConfig(seed=args.seed, steps=args.steps, **over)
    items = load_folder(DATA / "train" / "images", DATA / "train" / "points", cfg.classes, 0.5, cfg.mpp)
    train, sel = selection_split(items)
    from napari_histoai.methods.stain import stain_range

    target, spread, radius = stain_range([it.image for it in train])
    stain = target.round(5).tolist()
    if args.restamp:
        return restamp(args.out, stain, sel)
    t0 = time.time()

    seen = {}

    def show(p):
        i = p.info
        seen.update(i)
        print(f"step {p.done}/{p.total} loss {i['loss']:.3f} heat {i['heat']:.3f} class {i['class']:.3f} "
              f"{time.time() - t0:.0f}s", file=sys.stderr, flush=True)

    net = run_job(train_densemap_job(train, cfg, device="cpu", checkpoint_dir=args.out + ".ckpt"), show)
    secs = float(seen.get("seconds", time.time() - t0))     # across resumed runs
    cfg.stain_target = stain
    cfg.stain_spread, cfg.stain_radius = spread.round(5).tolist(), round(radius, 4)  # the training lab's stains stay
    det = DenseMapDetector(net, cfg)
    thr, grid = pick_threshold(det, sel, cfg.mpp)
    cfg.threshold = thr
    save_densemap(net, cfg, args.out, training={
        "data": f"CRCHistoPhenotypes train: {len(train)} tiles; threshold on {len(sel)} held-out train tiles "
                "(every 7th by name); val unseen", "selection": grid, "train_seconds": round(secs, 1),
        "steps": cfg.steps, "threads": args.threads, "command": " ".join(["python"] + sys.argv)})
    print(f"saved {args.out}: threshold {thr} (selection F_d, F_c {grid[str(thr)]}), {secs / 60:.1f} min",
          file=sys.stderr)
    return 0


def restamp(out: str, stain: list, sel) -> int:
    """Add the stain target to a saved peer and re-pick its threshold (weights unchanged)."""
    from napari_histoai.methods.detection.densemap import load_densemap, save_densemap
    from napari_histoai.methods.detection.selection import pick_threshold
    from napari_histoai.models import read_config, resolve_model

    det = load_densemap(out)
    training = read_config(resolve_model(out)).get("training", {})
    det.config.stain_target = stain
    det = type(det)(det.net, det.config)
    thr, grid = pick_threshold(det, sel, det.config.mpp)
    det.config.threshold = thr
    training |= {"selection": grid, "restamped": "stain target added after training; threshold re-picked on the "
                 "selection split: " + " ".join(["python"] + sys.argv)}
    save_densemap(det.net, det.config, out, training=training)
    print(f"restamped {out}: threshold {thr} (selection F_d, F_c {grid[str(thr)]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
