"""Benchmark: CyC-PDAM nuclei instance segmentation of H&E learned from labelled fluorescence.

Source: the fluorescence sets in ``../shared/data/fluorescence`` (DSB2018 stage 1, BBBC039 crops,
the StarDist DSB image), all labelled. Target: the 30 MoNuSeg training tiles (40x, taken as
0.25 µm/px), used *unlabelled* for adaptation. Scored on the 13 instance-labelled MoNuSeg tiles
(AJI, pixel-F1, object-F1 at IoU 0.5, PQ; medians over tiles) and pixel-F1 on all 30.

Rows: the paper's ablation (config.ABLATION: raw fluorescence, + CycleGAN, + inpainting, + image
and instance discriminators, + SEM, + TR = full), then the baselines a user has without training:
Otsu on the hematoxylin channel + distance-transform watershed (scored here) and the
self-supervised contrastive segmenter (its numbers from ``benchmarks/results/contrastive.json``,
same tiles, same scoring code). Training shares one CycleGAN between the rows that use it and
checkpoints under ``runs/adapt/`` (a rerun resumes); rows already in the JSON are skipped
(``--fresh`` to redo). Each row's model is saved to ``runs/adapt/models/<row>``.

    python benchmarks/bench_adapt.py --threads 2            # all rows, full row first
    python benchmarks/bench_adapt.py --quick                # smoke: 2 target tiles, few steps
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, ROOT  # noqa: E402

MONUSEG = DATA / "monuseg" / "train"
FLUO = DATA / "fluorescence"
MONUSEG_MPP = 0.25
ORDER = ["+ TR (full)", "Mask R-CNN on raw fluorescence", "+ CycleGAN", "+ inpainting",
         "+ image and instance discriminators", "+ SEM", "+ stain and zoom augmentation (ours)"]
TABLE_ORDER = ORDER[1:6] + ORDER[:1] + ORDER[6:]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def load_sources():
    from napari_histoai.methods.adaptation import read_source_folder

    out = []
    for d in sorted(FLUO.iterdir()):
        if (d / "images").is_dir():
            out += read_source_folder(d / "images", d / "masks")
    return out


def load_targets(n=None):
    from PIL import Image

    from napari_histoai.methods.adaptation import check_target

    files = sorted((MONUSEG / "images").glob("*.png"))[:n]
    return [check_target(np.asarray(Image.open(f))[..., :3], f.stem, MONUSEG_MPP) for f in files]


def truth(name: str):
    import tifffile

    inst = MONUSEG / "masks" / f"{name}.tif"
    if inst.exists():
        lab = tifffile.imread(inst)
        return lab > 0, lab
    return tifffile.imread(MONUSEG / "masks_binary" / f"{name}.tif") > 0, None


def score_tiles(predict, targets) -> dict:
    """predict(rgb) -> instance labels; medians of AJI / pixel-F1 / object-F1 / PQ."""
    from napari_histoai.metrics import aji, dice, object_f1, panoptic_quality

    per = {"aji": [], "f1_inst": [], "obj_f1": [], "pq": [], "f1_all": []}
    px, secs = 0, 0.0
    for t in targets:
        t0 = time.perf_counter()
        lab = predict(t.rgb)
        secs += time.perf_counter() - t0
        px += t.rgb.shape[0] * t.rgb.shape[1]
        fg, inst = truth(t.name)
        per["f1_all"].append(dice(lab > 0, fg))
        if inst is not None:
            per["aji"].append(aji(inst, lab))
            per["f1_inst"].append(dice(lab > 0, fg))
            per["obj_f1"].append(object_f1(inst, lab))
            per["pq"].append(panoptic_quality(inst, lab)["pq"])
    out = {k: float(np.median(v)) for k, v in per.items() if v}
    out.update(n_inst=len(per["aji"]), n_all=len(per["f1_all"]), mp_per_s=px / 1e6 / max(secs, 1e-9),
               per_tile_aji=[round(v, 4) for v in per["aji"]])
    return out


def otsu_watershed(rgb):
    from skimage.filters import threshold_otsu

    from napari_histoai.methods.classical import hematoxylin
    from napari_histoai.methods.contrastive.postprocess import split_instances

    h = hematoxylin(rgb)
    return split_instances(h > threshold_otsu(h), min_distance=5)


def model_predict(seg):
    from napari_histoai.engine.inference import infer_array

    def run(rgb):
        res = infer_array(seg, rgb, mpp=MONUSEG_MPP)
        return np.asarray(res.labels)
    return run


def contrastive_row() -> dict | None:
    p = RESULTS / "contrastive.json"
    if not p.exists():
        return None
    tiles = json.loads(p.read_text()).get("rows", {}).get("contrastive (defaults, seed 0)")
    if not tiles:
        return None
    d = [t["dice"] for t in tiles.values() if "dice" in t]
    a = [t["aji"] for t in tiles.values() if "aji" in t]
    return {"dice": float(np.median(d)), "aji": float(np.median(a)) if a else None, "n": len(d)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="all", help="comma-separated row names or slugs, or 'all'")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--gan-steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--sweep", default=None, metavar="ROW",
                    help="diagnostic only: score a trained row's model at score thresholds 0.3 / 0.5 / 0.7 on the "
                         "13 labelled tiles (chosen with labels, so an upper bound, never a product setting)")
    ap.add_argument("--rescore", action="store_true",
                    help="re-score the trained rows' saved models with today's inference settings (RPN budget, "
                         "label-free threshold calibration) without retraining")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/adapt[_seedN].json)")
    args = ap.parse_args(argv)

    import torch

    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.adaptation import ABLATION, AdaptedSegmenter, preset, save_adapted_model, train_adapt_job

    torch.set_num_threads(args.threads)
    if args.sweep:
        return sweep(args.sweep)
    suffix = "_quick" if args.quick else ("" if args.seed == 0 else f"_seed{args.seed}")
    out_json = Path(args.out) if args.out else RESULTS / f"adapt{suffix}.json"
    runs = ROOT / "runs" / f"adapt{suffix}"
    done = {} if (args.fresh or not out_json.exists()) else json.loads(out_json.read_text())
    rows = done.setdefault("rows", {})
    if args.rescore:
        rescore(rows, runs, load_targets(2 if args.quick else None))
        save_json(out_json, done)
        print(table(done))
        out_json.with_suffix(".md").write_text(table(done) + "\n")
        return 0
    sources = load_sources()
    targets = load_targets(2 if args.quick else None)
    over = {"seed": args.seed}
    if args.steps or args.quick:
        over["steps"] = args.steps or 20
    if args.gan_steps or args.quick:
        over["gan_steps"] = args.gan_steps or 20
    wanted = ORDER if args.rows == "all" else [r for r in ORDER if r in args.rows.split(",") or slug(r) in args.rows.split(",")]
    done["setup"] = {"sources": len(sources), "source_nuclei": int(sum(len(np.unique(s.mask)) - 1 for s in sources)),
                     "targets": len(targets), "threads": args.threads, "overrides": over,
                     "torch": torch.__version__}

    def save():
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(done, indent=2))

    if "Otsu (hematoxylin) + watershed" not in rows:
        rows["Otsu (hematoxylin) + watershed"] = {"kind": "baseline", **score_tiles(otsu_watershed, targets)}
        save()
    for name in wanted:
        if name in rows:
            continue
        cfg = preset("compact", **{**ABLATION[name], **over})
        t0 = time.perf_counter()
        last = [0.0]

        def show(p, name=name):
            if time.perf_counter() - last[0] > 60:
                last[0] = time.perf_counter()
                print(f"[{name}] {p.message} {json.dumps({k: round(v, 3) for k, v in p.info.get('losses', {}).items()})}",
                      file=sys.stderr, flush=True)
        res = run_job(train_adapt_job(sources, targets, cfg, device="cpu", checkpoint_dir=runs / "ckpt"), show)
        train_s = time.perf_counter() - t0
        folder = save_adapted_model(res.net, res.config, runs / "models" / slug(name),
                                    training={"row": name, "sources": len(sources), "targets": [t.name for t in targets]})
        seg = AdaptedSegmenter(res.net, res.config, name=slug(name))
        rows[name] = {"kind": "ablation", "train_s": round(train_s, 1), "model": str(folder.relative_to(ROOT)),
                      **score_tiles(model_predict(seg), targets)}
        save()
        print(f"[{name}] AJI {rows[name]['aji']:.3f} F1 {rows[name]['f1_inst']:.3f} train {train_s / 60:.1f} min",
              file=sys.stderr, flush=True)
    c = contrastive_row()
    if c is not None:
        done["contrastive"] = c
    save()
    print(table(done))
    (out_json.with_suffix(".md")).write_text(table(done) + "\n")
    return 0


def save_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def rescore(rows: dict, runs: Path, targets) -> None:
    """Calibrate each trained row's threshold on the unlabelled targets (as training now does),
    write it into the model's config.json and score the row again."""
    from napari_histoai.methods.adaptation import load_adapted_model
    from napari_histoai.methods.adaptation.calibrate import calibrate_threshold
    from napari_histoai.methods.adaptation.sources import resample_target

    for name in ORDER:
        folder = runs / "models" / slug(name)
        if name not in rows or not (folder / "config.json").exists():
            continue
        seg = load_adapted_model(folder)
        c = seg.config
        thr, info = calibrate_threshold(seg.detector, [resample_target(t, c.mpp) for t in targets],
                                        tile=c.tile_size, mask_threshold=c.mask_threshold, min_area=c.min_area,
                                        rng=np.random.default_rng(c.seed))
        c.score_threshold = thr
        cfg = json.loads((folder / "config.json").read_text())
        cfg["config"] = c.to_dict()
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))
        rows[name] = {**rows[name], "score_threshold": thr, "calibration": info,
                      **score_tiles(model_predict(seg), targets)}
        print(f"[{name}] threshold {thr:g}: AJI {rows[name]['aji']:.3f} F1 {rows[name]['f1_inst']:.3f}",
              file=sys.stderr, flush=True)


def sweep(row: str) -> int:
    """Score thresholds 0.3 / 0.5 / 0.7 of a trained row on the instance-labelled tiles."""
    from napari_histoai.methods.adaptation import load_adapted_model

    seg = load_adapted_model(ROOT / "runs" / "adapt" / "models" / slug(row))
    targets = [t for t in load_targets() if truth(t.name)[1] is not None]
    out = {}
    for thr in (0.3, 0.5, 0.7):
        seg.config.score_threshold = thr
        r = score_tiles(model_predict(seg), targets)
        out[str(thr)] = {k: r[k] for k in ("aji", "f1_inst", "obj_f1", "pq")}
        print(f"{row} score >= {thr}: AJI {r['aji']:.3f} pixel-F1 {r['f1_inst']:.3f} object-F1 {r['obj_f1']:.3f} "
              f"PQ {r['pq']:.3f}", flush=True)
    (RESULTS / f"adapt_sweep_{slug(row)}.json").write_text(json.dumps(out, indent=2))
    return 0


def table(done: dict) -> str:
    rows = done.get("rows", {})
    lines = ["| row | AJI (13) | pixel-F1 (13) | object-F1 (13) | PQ (13) | pixel-F1 (30) | train min | MP/s |",
             "|---|---|---|---|---|---|---|---|"]

    def f(v):
        return "–" if v is None else f"{v:.3f}"
    for name in [n for n in TABLE_ORDER if n in rows] + [n for n in rows if rows[n].get("kind") == "baseline"]:
        r = rows[name]
        tr = f"{r['train_s'] / 60:.1f}" if "train_s" in r else "–"
        lines.append(f"| {name} | {f(r.get('aji'))} | {f(r.get('f1_inst'))} | {f(r.get('obj_f1'))} | {f(r.get('pq'))} | "
                     f"{f(r.get('f1_all'))} | {tr} | {r.get('mp_per_s', 0):.2f} |")
    c = done.get("contrastive")
    if c:
        lines.append(f"| self-supervised contrastive (contrastive.json) | {f(c.get('aji'))} | – | – | – | "
                     f"{f(c.get('dice'))} | – | – |")
    s = done.get("setup", {})
    lines.append("")
    lines.append(f"Sources: {s.get('sources')} fluorescence images ({s.get('source_nuclei')} nuclei); targets: "
                 f"{s.get('targets')} MoNuSeg tiles used unlabelled; {s.get('threads')} CPU threads; overrides "
                 f"{s.get('overrides')}; medians over tiles; MP/s = level-0 (0.25 µm/px) megapixels per second of "
                 "inference on this CPU.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
