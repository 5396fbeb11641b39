#!/usr/bin/env python
"""AC-Former's switches, ablated with several seeds and selected on training data only.

The paper's Table 2 rows (baseline; + random affine views; + AAT; + the global EMA loss;
+ FuseStyle), each trained at the compact budget (1600 steps) from scratch on the 60
CRCHistoPhenotypes training tiles of the selection split (`methods/detection/selection.py`:
every 7th tile by name is held out and never trained on). Each run is scored on its
transformer points, the output the switches act on: the final global (EMA) network on lone
windows of its training input size (128 px views, overlap 32; 256 px crops, overlap 64, for the
row without views), duplicate merge 4 px, score threshold picked on the hold-out by F_d + mean F_c
(the same grid as the bundled model). crchisto/val (10 tiles) and the 13 MoNuSeg centroid tiles
are reported only.

Every finished run leaves one record, ``benchmarks/results/ablation/<row>_s<seed>.json``; a run
with a record is skipped, so the command resumes across sessions (and a run interrupted midway
resumes from its checkpoint under ``runs/ablation3/`` while that folder exists). Several workers
may run at once (e.g. two at one thread each on two cores): each claims a run before training it. The table
(``benchmarks/results/detection_ablation3.md``) is rebuilt from all records after every run:
per row the median and range over the seeds done so far, and the classical detector (no weights)
as the baseline a user could use instead.

    python benchmarks/bench_ablation.py --seeds 0,1,2 --threads 1          # all 15 runs, in seed order
    python benchmarks/bench_ablation.py --seeds 1 --rows 2,3 --device cuda  # some of them on a GPU
    python benchmarks/bench_ablation.py --table                            # rebuild the table only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detection import DATA, RESULTS, ROOT, _load, bench_classical, score_split  # noqa: E402

from napari_histoai.io.atomic import atomic_write_text  # noqa: E402

# the paper's Table 2 rows, each adding one switch to the row above
ABLATION = [
    ("baseline", dict(views="none", global_loss=False, fusestyle=False)),
    ("+random affine", dict(views="affine", global_loss=False, fusestyle=False)),
    ("+AAT", dict(views="aat", global_loss=False, fusestyle=False)),
    ("+AAT+global", dict(views="aat", global_loss=True, fusestyle=False)),
    ("+AAT+global+FuseStyle", dict(views="aat", global_loss=True, fusestyle=True)),
]
RECORDS = RESULTS / "ablation"
RUNS = ROOT / "runs" / "ablation3"
STEM = "detection_ablation3"


def slug(name: str) -> str:
    return name.replace("+", "plus_").replace(" ", "_")


def train_run(i: int, seed: int, steps: int, device: str) -> Path:
    """Train ablation row ``i`` with ``seed`` on the 60 selection-split training tiles."""
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.detection.configs import get_config
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.selection import selection_split
    from napari_histoai.methods.detection.train import train_job

    name, over = ABLATION[i]
    cfg = get_config("compact", steps=steps, **over)
    cfg = cfg.replace(global_warmup=int(round(steps * 1000 / 1600)))  # the compact schedule's proportions
    crc = DATA / "crchisto" / "train"
    tr, sel = selection_split(load_folder(crc / "images", crc / "points", cfg.classes, 0.5, cfg.mpp))
    folder = RUNS / f"{slug(name)}_s{seed}"
    extra = {"name": f"{name} (seed {seed})",
             "training": {"data": "CRCHistoPhenotypes train: 60 tiles (selection split), every 7th held out",
                          "ablation_row": name}}
    print(f"[{time.strftime('%H:%M:%S')}] training {name}, seed {seed} ({steps} steps, {device}) -> {folder}",
          file=sys.stderr, flush=True)
    run_job(train_job(cfg, tr, folder, val=sel, device=device, seed=seed, resume=True, eval_every=steps,
                      log_path=str(folder) + ".jsonl", extra_config=extra))
    return folder


def score_run(folder: Path, name: str, seed: int) -> dict:
    """Operating point on the hold-out, then crchisto/val and MoNuSeg (reported only)."""
    from napari_histoai.methods.detection.predict import load_acformer
    from napari_histoai.methods.detection.selection import pick_threshold, selection_split
    from napari_histoai.models import read_config

    cfg = read_config(folder)
    a = cfg["architecture"]
    det = load_acformer(str(folder), device="cpu")
    win = int(a["crop_size"] if a["views"] == "none" else a["view_size"])
    det.windowed = False
    det.set_window(win, win // 4)
    det.min_distance = 4.0
    crc = DATA / "crchisto"
    _, sel = selection_split(_load(crc / "train", det.classes))
    det.threshold, grid = pick_threshold(det, sel, 0.5)
    return {"row": name, "seed": seed, "threshold": det.threshold, "holdout_grid": grid,
            "window": win, "views": a["views"], "global_loss": a["global_loss"], "fusestyle": a["fusestyle"],
            "train_steps": cfg.get("training", {}).get("steps"),
            "train_seconds": cfg.get("training", {}).get("train_seconds"),
            "device": cfg.get("training", {}).get("device"),
            "crchisto_val": score_split(det, _load(crc / "val", det.classes), 0.5),
            "monuseg_fd": score_split(det, _load(DATA / "monuseg" / "train", det.classes), 0.25)["f_d"],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def claim(run: str) -> bool:
    """Claim a run for this process (two workers never train the same run): a claim file holding
    the pid, created exclusively; a claim whose process is gone is taken over."""
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / f"{run}.claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return False  # a live worker has it
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def table(classes: list[str]) -> str:
    """Median (range) over the seeds recorded so far, one line per ablation row."""
    recs = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]

    def mr(vals):
        return "–" if not vals else (f"{np.median(vals):.3f}" if len(vals) == 1 else
                                     f"{np.median(vals):.3f} ({min(vals):.3f}-{max(vals):.3f})")
    head = ["row", "views", "global", "FuseStyle", "seeds", "F_d", "mean F_c", *[f"F_c {c}" for c in classes],
            "MoNuSeg F_d", "thresholds", "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, over in ABLATION:
        rs = sorted((r for r in recs if r["row"] == name), key=lambda r: r["seed"])
        v = [r["crchisto_val"] for r in rs]
        t = [r["train_seconds"] for r in rs if r.get("train_seconds")]
        lines.append("| " + " | ".join([
            name, over["views"], "on" if over["global_loss"] else "off", "on" if over["fusestyle"] else "off",
            ",".join(str(r["seed"]) for r in rs) or "–", mr([x["f_d"] for x in v]), mr([x["mean_f_c"] for x in v]),
            *[mr([x["f_c"][k] for x in v]) for k in range(len(classes))], mr([r["monuseg_fd"] for r in rs]),
            ",".join(f"{r['threshold']:g}" for r in rs) or "–",
            "–" if not t else f"{np.median(t) / 60:.0f} min"]) + " |")
    c = bench_classical(classes, do_speed=False)  # the weights-free detector a user could use instead
    v = c["crchisto_val"]
    lines.append("| " + " | ".join([c["name"], "–", "–", "–", "–", f"{v['f_d']:.3f}", "–", *["–"] * len(classes),
                                    f"{c['monuseg_fd']:.3f}", "–", "–"]) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    ap.add_argument("--rows", default="all", help="'all' or indices into the 5 rows, e.g. 0,2")
    ap.add_argument("--steps", type=int, default=1600, help="training steps per run (the compact budget: 1600)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="training device (scoring runs on the CPU)")
    ap.add_argument("--table", action="store_true", help="only rebuild the table from the records")
    args = ap.parse_args()

    import torch

    from napari_histoai.methods.detection.configs import get_config

    torch.set_num_threads(args.threads)
    classes = list(get_config("compact").classes)
    RECORDS.mkdir(parents=True, exist_ok=True)
    rows = range(len(ABLATION)) if args.rows == "all" else [int(r) for r in args.rows.split(",")]
    if not args.table:
        for seed in (int(s) for s in args.seeds.split(",")):
            for i in rows:
                name = ABLATION[i][0]
                rec = RECORDS / f"{slug(name)}_s{seed}.json"
                if rec.is_file() or not claim(f"{slug(name)}_s{seed}"):
                    continue
                folder = train_run(i, seed, args.steps, args.device)
                atomic_write_text(rec, json.dumps(score_run(folder, name, seed), indent=2))
                (RUNS / f"{slug(name)}_s{seed}.claim").unlink(missing_ok=True)
                print(f"[{time.strftime('%H:%M:%S')}] scored {name}, seed {seed} -> {rec}", file=sys.stderr, flush=True)
                atomic_write_text(RESULTS / f"{STEM}.md", table(classes) + note(args))
    md = table(classes) + note(args)
    print(md)
    atomic_write_text(RESULTS / f"{STEM}.md", md)
    return 0


def note(args) -> str:
    return ("\n\nEach run: compact config, {steps} steps from scratch, trained on the 60 training tiles of the "
            "selection split; scored on its transformer points (final EMA network, lone windows of the training "
            "input size, merge 4 px) at the threshold picked on the 10 held-out training tiles. crchisto/val: 10 "
            "tiles (20x), reported only; MoNuSeg: 13 training tiles with centroids (40x, resampled), F_d only. "
            "Pairing radius 3 µm; F_c as HoVer-Net's compute_stats.py. Median (range) over the seeds listed. "
            "Command: `python benchmarks/bench_ablation.py --seeds 0,1,2 --threads 1` (resumes; records in "
            "benchmarks/results/ablation/). Table rebuilt {date}.\n").format(
        steps=args.steps, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


if __name__ == "__main__":
    sys.exit(main())
