#!/usr/bin/env python
"""Every bundled or default model on a CUDA GPU against the same model on the CPU, on real data:
quality must match, and the table gives the seconds a GPU user waits.

Rows: the bundled detector (crchisto/val, F_d / mean F_c, MP/s), the self-supervised segmenter's
product default and the paper's contrastive method (trained on each MoNuSeg tile, then applied;
Dice / AJI, seconds per tile for training + prediction), the bundled CyC-PDAM segmenter
(MoNuSeg, AJI, seconds per tile); with the simplest baselines (hematoxylin-peak detector, Otsu on
hematoxylin + watershed) in the same table. Meant for a GPU machine:

    python benchmarks/bench_gpu.py --tiles 4 --threads 2        # writes results/gpu.json and .md

``--devices cpu`` alone runs the CPU half (slow on 2 threads: use few tiles).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import DATA, RESULTS  # noqa: E402
from bench_adapt import otsu_watershed  # noqa: E402
from bench_segment import MPP, score, tiles  # noqa: E402


def _sync(dev: str) -> None:
    if dev == "cuda":
        import torch

        torch.cuda.synchronize()


def detector_row(dev: str, n_val: int | None) -> dict:
    from bench_detection import _load, score_split, speed

    from napari_histoai.methods.detection.predict import load_acformer

    det = load_acformer("acformer-crc", device=dev)
    items = _load(DATA / "crchisto" / "val", det.classes, n_val)
    r = score_split(det, items, 0.5)
    speed(det, items)  # warm-up (kernels, cudnn autotune)
    return {"f_d": r["f_d"], "mean_f_c": r["mean_f_c"], "mp_per_s": speed(det, items, repeats=2),
            "n": len(items)}


def classical_row(n_val: int | None) -> dict:
    from bench_detection import _load, score_split, speed

    from napari_histoai.methods.detection.registry import load_detector

    det = load_detector("classical", device="cpu")
    items = _load(DATA / "crchisto" / "val", ["epithelial", "inflammatory", "fibroblast", "others"], n_val)
    r = score_split(det, items, 0.5)
    return {"f_d": r["f_d"], "mean_f_c": None, "mp_per_s": speed(det, items), "n": len(items)}


def _segment_rows(predict, dev: str, n: int) -> dict:
    per = {}
    for name, rgb in tiles(n):
        t = time.perf_counter()
        lab = predict(rgb)
        _sync(dev)
        per[name] = {**score(lab, name), "secs": time.perf_counter() - t}
    return {"dice": float(np.median([v["dice"] for v in per.values()])),
            "aji": float(np.median([v["aji"] for v in per.values() if "aji" in v])),
            "secs": float(np.median([v["secs"] for v in per.values()])), "n": len(per), "tiles": per}


def selftrain_predict(dev: str):
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.selftrain import SelfTrainConfig
    from napari_histoai.methods.selftrain.job import segment_image_job

    def run(rgb):
        res, _ = run_job(segment_image_job(rgb, config=SelfTrainConfig(seed=0), mpp=MPP, tissue_only=False,
                                           device=dev))
        return np.asarray(res.labels)
    return run


def contrastive_predict(dev: str):
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.contrastive.job import SegmenterModel, segment_job, train_segmenter_job

    def run(rgb):
        tr = run_job(train_segmenter_job(rgb, device=dev, preview=True))
        res = run_job(segment_job(SegmenterModel.from_result(tr, mpp=MPP), rgb, mpp=MPP, device=dev,
                                  tissue_only=False))
        return np.asarray(res.labels)
    return run


def cycpdam_predict(dev: str):
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.methods.adaptation.model import load_adapted_model

    seg = load_adapted_model(device=dev)
    return lambda rgb: np.asarray(infer_array(seg, rgb, mpp=MPP).labels)


def table(rows: dict, meta: str) -> str:
    def f(v, d=3):
        return "–" if v is None else f"{v:.{d}f}"

    out = ["| model | data | device | quality | speed |", "|---|---|---|---|---|"]
    for key, r in rows.items():
        model, dev = key.rsplit(" @ ", 1)
        if "f_d" in r:
            q = f"F_d {f(r['f_d'])}, mean F_c {f(r['mean_f_c'])}"
            s = f"{r['mp_per_s']:.2f} MP/s"
            data = f"crchisto/val ({r['n']} tiles)"
        else:
            q = f"Dice {f(r['dice'])}, AJI {f(r['aji'])}"
            s = f"{r['secs']:.1f} s/tile"
            data = f"MoNuSeg train ({r['n']} tiles, medians)"
        out.append(f"| {model} | {data} | {dev} | {q} | {s} |")
    return "\n".join(out) + "\n\n" + meta + "\n"


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="cuda,cpu")
    ap.add_argument("--tiles", type=int, default=4, help="MoNuSeg tiles (those with instance masks first)")
    ap.add_argument("--val", type=int, default=None, help="crchisto/val tiles (default all 10)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="detector,classical,selftrain,otsu,contrastive,cycpdam")
    ap.add_argument("--out", default=str(RESULTS / "gpu"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    want = args.rows.split(",")
    rows = {}
    for dev in args.devices.split(","):
        if dev == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: skipping the GPU rows", file=sys.stderr)
            continue
        if "detector" in want:
            rows[f"AC-Former, bundled acformer-crc @ {dev}"] = detector_row(dev, args.val)
        if "selftrain" in want:
            rows[f"self-trained U-Net (segment default) @ {dev}"] = _segment_rows(selftrain_predict(dev), dev, args.tiles)
        if "contrastive" in want:
            rows[f"patch-contrastive (paper method) @ {dev}"] = _segment_rows(contrastive_predict(dev), dev, args.tiles)
        if "cycpdam" in want:
            rows[f"CyC-PDAM, bundled cycpdam-he @ {dev}"] = _segment_rows(cycpdam_predict(dev), dev, args.tiles)
        print(json.dumps({k: {a: b for a, b in v.items() if a != "tiles"} for k, v in rows.items()}), flush=True)
    if "classical" in want:
        rows["hematoxylin-peak detector (baseline) @ cpu"] = classical_row(args.val)
    if "otsu" in want:
        rows["Otsu on hematoxylin + watershed (baseline) @ cpu"] = _segment_rows(otsu_watershed, "cpu", args.tiles)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    meta = (f"GPU: {gpu}; CPU rows on {args.threads} threads of {platform.processor() or platform.machine()}; "
            f"torch {torch.__version__}. Segmenters train on each tile (1000 x 1000 px at 40x) and then segment "
            f"it: seconds are training + prediction. Command: `python benchmarks/bench_gpu.py "
            f"--tiles {args.tiles} --threads {args.threads}`.")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = table(rows, meta)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
