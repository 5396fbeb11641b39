#!/usr/bin/env python
"""Where an AC-Former training step spends its time (data, forward, loss, backward, optimiser)
on the given device: 20 warm-up steps, then 10 profiled ones on real crchisto crops.

    python scripts/device/profile_detector_step.py --device cuda --batch 4
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("HISTOAI_DATA", ROOT.parent / "shared" / "data")) / "crchisto" / "train"


def main() -> int:
    from napari_histoai.methods.detection.data import random_crop
    from napari_histoai.methods.detection.configs import get_config
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.model import build_model
    from napari_histoai.methods.detection.train import Trainer

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--global-loss", action="store_true", help="profile with the global (EMA teacher) loss on")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = get_config("compact", batch_images=args.batch, global_warmup=0 if args.global_loss else 10**9)
    items = load_folder(DATA / "images", DATA / "points", cfg.classes, 0.5, cfg.mpp)
    tr = Trainer(build_model(cfg).to(args.device), cfg)
    rng = np.random.default_rng(0)

    def batch():
        crops, targets = [], []
        for _ in range(cfg.batch_images):
            c, p, lab = random_crop(items[int(rng.integers(len(items)))], cfg.crop_size, rng, cfg.color_jitter)
            crops.append(torch.from_numpy(c))
            targets.append({"points": torch.from_numpy(p), "labels": torch.from_numpy(lab)})
        return torch.stack(crops), targets

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(20):
        tr.step(*batch())
    sync()
    t_data = t_step = 0.0
    for _ in range(10):
        t0 = time.perf_counter()
        b = batch()
        t1 = time.perf_counter()
        tr.step(*b)
        sync()
        t_data += t1 - t0
        t_step += time.perf_counter() - t1
    print(f"per step: data {t_data / 10 * 1000:.0f} ms, step {t_step / 10 * 1000:.0f} ms (batch {args.batch}, {args.device})")
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(5):
            tr.step(*batch())
        sync()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=50))
    return 0


if __name__ == "__main__":
    sys.exit(main())
