#!/usr/bin/env python
"""Self-supervised nuclei masks on MoNuSeg: the product default (self-trained U-Net on the image
itself, methods/selftrain) against Otsu on hematoxylin + watershed and the paper's contrastive
segmenter, per tile, no labels anywhere in training or selection.

Each of the 30 MoNuSeg training tiles (1000 x 1000 px at 40x, 0.25 µm/px) is segmented on its
own: the model trains on that tile (resampled to 0.5 µm/px), then the engine segments it; labels
come back on the 40x grid. Dice against the binary masks (30 tiles), AJI against the instance
masks (13 tiles); medians, seed range, tile-for-tile wins against the baseline; seconds per
tile (training + prediction). Resumable: per-tile results are saved as they come.

    python benchmarks/bench_segment.py --seeds 0,1,2 --threads 2
    python benchmarks/bench_segment.py --seeds 0 --tiles 4          # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
MPP = 0.25
ALT_THRESHOLD = 0.5   # the previous default nuclei-probability threshold, scored on the same models

from bench_adapt import MONUSEG, otsu_watershed, truth  # noqa: E402


def tiles(n=None):
    from PIL import Image

    files = sorted((MONUSEG / "images").glob("*.png"))
    # the 13 tiles with instance masks first (AJI), then the rest
    files = sorted(files, key=lambda f: not (MONUSEG / "masks" / f"{f.stem}.tif").exists())[:n]
    for f in files:
        yield f.stem, np.ascontiguousarray(np.asarray(Image.open(f))[..., :3])


def score(lab, name) -> dict:
    from napari_histoai.metrics import aji, dice

    fg, inst = truth(name)
    out = {"dice": float(dice(lab > 0, fg))}
    if inst is not None:
        out["aji"] = float(aji(inst, lab))
    return out


def prior_labels(rgb, cfg):
    """The teacher: the hematoxylin prior's instances at the working resolution, on the 40x grid."""
    from napari_histoai.engine.resize import resize, scaled_shape
    from napari_histoai.methods.selftrain import pseudo_labels

    small = resize(rgb, scaled_shape(rgb.shape[:2], MPP / cfg.mpp))
    return resize(pseudo_labels(small, cfg).instances, rgb.shape[:2], kind="labels")


def selftrained(rgb, seed):
    """(labels of the product default on the 40x grid, its trained model)."""
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.selftrain import SelfTrainConfig
    from napari_histoai.methods.selftrain.job import segment_image_job

    res, model = run_job(segment_image_job(rgb, config=SelfTrainConfig(seed=seed), mpp=MPP, tissue_only=False))
    return np.asarray(res.labels), model


def at_threshold(rgb, model, threshold):
    """The same trained model's instances at another nuclei-probability threshold, 40x grid."""
    from dataclasses import replace

    from napari_histoai.engine.resize import resize, scaled_shape
    from napari_histoai.methods.selftrain.model import instances_from_maps

    small = resize(rgb, scaled_shape(rgb.shape[:2], MPP / model.config.mpp))
    lab = instances_from_maps(*model.maps(small), replace(model.config, threshold=threshold))
    return resize(lab, rgb.shape[:2], kind="labels")


def summary(done: dict) -> str:
    rows = done["rows"]
    base = rows.get("Otsu (hematoxylin) + watershed", {})

    def med(row, k):
        v = [t[k] for t in row.values() if k in t]
        return float(np.median(v)) if v else None

    lines = ["| method | tiles | Dice median [seed range] | AJI median (13) [seed range] | tiles with Dice >= baseline "
             "+ 0.03 | tiles with AJI >= baseline + 0.03 | s / tile |", "|---|---|---|---|---|---|---|"]
    groups = {}
    for name in rows:
        groups.setdefault(name.split(" [seed")[0], []).append(name)
    for g, names in sorted(groups.items(), key=lambda kv: "previous" in kv[0]):   # earlier defaults last
        ds = [med(rows[n], "dice") for n in names]
        aj = [med(rows[n], "aji") for n in names]
        wins, n_t, awins, n_a = 0, 0, 0, 0
        for n in names[:1]:
            for t, r in rows[n].items():
                if t in base and g != "Otsu (hematoxylin) + watershed":
                    n_t += 1
                    wins += r["dice"] >= base[t]["dice"] + 0.03
                    if "aji" in r:
                        n_a += 1
                        awins += r["aji"] >= base[t]["aji"] + 0.03
        secs = [t.get("seconds") for n in names for t in rows[n].values() if t.get("seconds")]

        def fmt(v):
            v = [x for x in v if x is not None]
            if not v:
                return "–"
            return f"{np.median(v):.3f}" + (f" [{min(v):.3f}-{max(v):.3f}]" if len(v) > 1 else "")
        lines.append(f"| {g} | {len(rows[names[0]])} | {fmt(ds)} | {fmt(aj)} | "
                     f"{f'{wins}/{n_t}' if n_t else '–'} | {f'{awins}/{n_a}' if n_a else '–'} | "
                     f"{f'{np.median(secs):.0f}' if secs else '–'} |")
    c = contrastive()
    if c:
        lines.append(f"| patch-contrastive (the paper, contrastive.json) | {c['n']} | {c['dice']:.3f} | {c['aji']:.3f} | – | – | "
                     f"{c['secs']} (1 thread) |")
    return "\n".join(lines)


def contrastive():
    p = RESULTS / "contrastive.json"
    if not p.exists():
        return None
    t = json.loads(p.read_text()).get("rows", {}).get("contrastive (defaults, seed 0)")
    if not t:
        return None
    return {"n": len(t), "dice": float(np.median([v["dice"] for v in t.values()])),
            "aji": float(np.median([v["aji"] for v in t.values() if "aji" in v])), "secs": 84}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--tiles", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "segment.json"))
    args = ap.parse_args()

    import torch

    from napari_histoai.methods.selftrain import SelfTrainConfig

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {}
    rows = done.setdefault("rows", {})
    done["setup"] = {"threads": args.threads, "torch": torch.__version__, "config": SelfTrainConfig().to_dict()}
    cfg = SelfTrainConfig()
    seeds = [int(s) for s in args.seeds.split(",")]

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(out)

    for name, rgb in tiles(args.tiles):
        b = rows.setdefault("Otsu (hematoxylin) + watershed", {})
        if name not in b:
            b[name] = score(otsu_watershed(rgb), name)
        p = rows.setdefault("hematoxylin prior (smoothed, filled, opened) + watershed (the teacher)", {})
        if name not in p:
            p[name] = score(prior_labels(rgb, cfg), name)
        for s in seeds:
            r = rows.setdefault(f"self-trained U-Net (product default) [seed {s}]", {})
            if name in r:
                continue
            t0 = time.perf_counter()
            lab, model = selftrained(rgb, s)
            r[name] = {**score(lab, name), "seconds": round(time.perf_counter() - t0, 1)}
            alt = rows.setdefault(f"self-trained U-Net, threshold {ALT_THRESHOLD} (same models) [seed {s}]", {})
            alt[name] = score(at_threshold(rgb, model, ALT_THRESHOLD), name)
            print(f"{name} seed {s}: Dice {r[name]['dice']:.3f} (baseline {b[name]['dice']:.3f}, teacher "
                  f"{p[name]['dice']:.3f}) AJI {r[name].get('aji', float('nan')):.3f} "
                  f"(baseline {b[name].get('aji', float('nan')):.3f}) {r[name]['seconds']:.0f}s", file=sys.stderr, flush=True)
            save()
        save()
    md = summary(done)
    note = (f"\n\nMoNuSeg train, 1000 x 1000 tiles at 40x (0.25 µm/px); each tile trained on and segmented on its own "
            f"(0.5 µm/px working resolution); {args.threads} CPU threads. Command: `python {' '.join(sys.argv)}`. "
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n")
    print(md + note)
    out.with_suffix(".md").write_text(md + note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
