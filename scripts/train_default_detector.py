#!/usr/bin/env python
"""Reproduce the bundled default nuclei detector ``resources/models/acformer-crc``.

Trains the compact AC-Former (AAT views + global EMA loss + FuseStyle) on
CRCHistoPhenotypes ``train`` (70 tiles, 20x ~ 0.5 µm/px); ``val`` (10 tiles) is used only to
select the checkpoint and the score threshold. Resumable: run the same command again after an
interruption. Then ``--finalize`` copies the selected model into the package with a model card.

    python scripts/train_default_detector.py --out runs/acformer-crc --log runs/acformer-crc.log
    python scripts/train_default_detector.py --out runs/acformer-crc --finalize

Run it in the background with ``nohup ... &``; CPU time about 1 hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "crchisto").resolve()
DEST = ROOT / "src" / "napari_histoai" / "resources" / "models" / "acformer-crc"


def train(args) -> int:
    import torch

    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.detection.configs import get_config
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.train import train_job

    torch.set_num_threads(args.threads)
    over = {"steps": args.steps} if args.steps else {}
    for kv in args.set or []:
        k, v = kv.split("=", 1)
        over[k] = json.loads(v)
    cfg = get_config(args.config, **over)
    tr = load_folder(DATA / "train" / "images", DATA / "train" / "points", cfg.classes, 0.5, cfg.mpp)
    va = load_folder(DATA / "val" / "images", DATA / "val" / "points", cfg.classes, 0.5, cfg.mpp)
    extra = {"training": {"data": "CRCHistoPhenotypes train (70 tiles), val (10 tiles) for selection",
                          "command": " ".join(["python"] + sys.argv), "config_name": args.config}}
    t0 = time.time()

    def show(p):
        if p.done % 10 == 0 or "val" in p.info:
            i = p.info
            msg = f"step {p.done}/{p.total} loss {i['loss']:.3f} cls {i['class']:.3f} pt {i['point']:.3f} {time.time() - t0:.0f}s"
            if "val" in i and i["val"]:
                msg += " val " + json.dumps({k: [round(v['f_d'], 3), round(v['mean_f_c'], 3)] for k, v in i["val"].items()})
            print(msg, flush=True)

    run_job(train_job(cfg, tr, args.out, val=va, device="cpu", seed=args.seed, resume=True,
                      ckpt_every=50, eval_every=args.eval_every, log_path=args.log, extra_config=extra), show)
    return 0


def finalize(args) -> int:
    """Pick the score threshold and the optional duplicate merge distance on val (stored in the
    config), write the model card, copy the model into the package."""
    import torch

    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.predict import load_acformer
    from napari_histoai.methods.detection.train import evaluate
    from napari_histoai.models import load_checkpoint, read_config, save_checkpoint

    torch.set_num_threads(args.threads)
    src = Path(args.out)
    state, cfg = load_checkpoint(src)
    det = load_acformer(src, device="cpu")
    va = load_folder(DATA / "val" / "images", DATA / "val" / "points", det.classes, 0.5, det.mpp)
    grid = {}
    for md in (0.0, 4.0):
        det.min_distance = md
        for thr, r in evaluate(det, va, thresholds=(0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)).items():
            grid[f"thr={thr},min_distance={md:g}"] = {**r, "threshold": float(thr), "min_distance": md}
    best = max(grid.values(), key=lambda r: r["f_d"] + r["mean_f_c"])
    cfg["architecture"]["score_threshold"] = best["threshold"]
    cfg["architecture"]["min_distance"] = best["min_distance"]
    cfg.setdefault("metrics", {})["val_selected"] = best
    cfg["metrics"]["val_grid"] = grid
    cfg["name"] = "acformer-crc"
    save_checkpoint(DEST, state, cfg)
    cfg = read_config(DEST)
    (DEST / "MODEL_CARD.md").write_text(model_card(cfg))
    print(json.dumps(best))
    print(f"wrote {DEST}")
    return 0


def model_card(cfg: dict) -> str:
    a, t, m = cfg["architecture"], cfg.get("training", {}), cfg.get("metrics", {})
    thr = f"{a['score_threshold']:g}"
    v = m.get("val_selected", {})
    fc = ", ".join(f"{c} {x:.3f}" for c, x in zip(cfg["classes"], v.get("f_c", [])))
    return f"""# acformer-crc: default nuclei detector (AC-Former, compact)

- **Method**: AC-Former (Huang et al., ICCV 2023): two-stage deformable point transformer with
  the Adaptive Affine Transformer (views={a['views']}, M={a['n_views']}), the global EMA network
  loss (alpha={a['global_weight']} after {a['global_warmup']} steps, teacher threshold
  {a['teacher_threshold']}) and FuseStyle ({a['fusestyle']}, partner {a['fusestyle_partner']}).
  Compact config: {a['backbone']} stages {a['backbone_stages']} (from scratch, no pretrained
  weights) + {a['extra_levels']} extra level, d={a['d_model']}, {a['enc_layers']}+{a['dec_layers']} layers,
  {a['num_queries']} queries per {a['query_ref_size']}^2 px.
- **Classes**: {', '.join(cfg['classes'])}. **Resolution**: {cfg['mpp']} µm/px (20x); other
  resolutions are resampled by the detect job. Score threshold {thr}, duplicate merge distance
  {a['min_distance']:g} px (0 = off; both chosen on val).
- **Data**: {t.get('data', '')}. CRCHistoPhenotypes (Sirinukunwattana et al., IEEE TMI 2016),
  research use only; points of class `unlabeled` were detection targets of unknown class.
- **Training**: {t.get('steps')} steps, seed {t.get('seed')}, {t.get('train_seconds')} s on {t.get('device')}
  (2 shared CPU cores). Command: `{t.get('command', '')}`, then `--finalize`.
- **Validation (crchisto/val, 10 tiles, 6 px, selected on this split)**: F_d {v.get('f_d', float('nan')):.3f}
  (precision {v.get('precision', float('nan')):.3f}, recall {v.get('recall', float('nan')):.3f}),
  F_c {fc}, mean F_c {v.get('mean_f_c', float('nan')):.3f}. Val was used for model selection, so
  these numbers are optimistic; the official test split was not available.
- **Limits**: a small model trained for about an hour on CPU from scratch on 70 tiles of one
  organ (colorectal); expect lower accuracy on other tissues and stains.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "acformer-crc"))
    ap.add_argument("--log", default=None)
    ap.add_argument("--config", default="compact")
    ap.add_argument("--steps", type=int, default=0, help="override the config's steps")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", help="override a config value, e.g. --set global_warmup=1200 (JSON value)")
    ap.add_argument("--finalize", action="store_true", help="copy the selected model into the package")
    args = ap.parse_args()
    return finalize(args) if args.finalize else train(args)


if __name__ == "__main__":
    sys.exit(main())
