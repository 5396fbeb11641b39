#!/usr/bin/env python
"""Nuclei detection benchmark: AC-Former models through the tiled detect job.

Per model: F_d, per-class F_c and mean F_c on crchisto/val (pairing radius 3 µm = 6 px at 20x;
F_c as HoVer-Net's reference ``compute_stats.py``: per class only the pairs involving it, so no
true negatives; `unlabeled` nuclei count for detection only); cross-domain F_d on the 13 MoNuSeg
training tiles that have centroids (40x, 0.25 µm/px, resampled by the detect job to the model's
µm/px; scored at 3 µm = 12 px at 40x); CPU inference speed (MP/s of model-resolution pixels, whole-image detect job
on a 2000 x 2000 mosaic of val tiles, tissue mask off); training wall time (from the model
config). The classical hematoxylin-peak detector (no weights) is scored in the same table: the
baseline a user could use instead. Prints a markdown table and saves it (md + json) under
benchmarks/results/.

    python benchmarks/bench_detection.py                          # the bundled model
    python benchmarks/bench_detection.py --models runs/a runs/b   # any models

The ablation of AC-Former's switches (3 seeds, selected on training data) is
``benchmarks/bench_ablation.py``.
    python benchmarks/bench_detection.py --smoke                  # CI: 2 val tiles, no speed/MoNuSeg
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()
RESULTS = ROOT / "benchmarks" / "results"

def _load(split_dir: Path, classes, n: int | None = None):
    """Images at their own resolution (the detect job resamples) with points and labels."""
    from napari_histoai.methods.detection.data import load_folder

    items = load_folder(split_dir / "images", split_dir / "points", classes)
    return items[:n] if n else items


def _detect(detector, image: np.ndarray, mpp: float):
    from napari_histoai.engine.inference import infer_array

    return infer_array(detector, image, mpp=mpp).arrays()


def score_split(detector, items, image_mpp: float) -> dict:
    """Pooled F_d / F_c over all images (images stacked far apart so pairs never cross), pairing
    radius 3 µm in the images' own px."""
    from napari_histoai.metrics import pooled_classification_scores, radius_px

    per_image = ((*_detect(detector, it.image, image_mpp)[:2], it.points, it.labels) for it in items)
    r = pooled_classification_scores(per_image, len(detector.classes), radius_px(image_mpp))
    return {k: r[k] for k in ("f_d", "precision", "recall", "f_c", "mean_f_c")}


def speed(detector, val_items, repeats: int = 1) -> float:
    """MP/s (model-resolution pixels) of the detect job on a 2000 x 2000 mosaic of val tiles."""
    tiles = [it.image[:500, :500] for it in val_items]
    rows = [np.concatenate([tiles[(r * 4 + c) % len(tiles)] for c in range(4)], 1) for r in range(4)]
    mosaic = np.ascontiguousarray(np.concatenate(rows, 0))
    _detect(detector, mosaic[:512, :512], detector.mpp)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        _detect(detector, mosaic, detector.mpp)
    dt = (time.perf_counter() - t) / repeats
    return mosaic.shape[0] * mosaic.shape[1] / 1e6 / dt


def bench_model(path: str, smoke: bool = False, do_speed: bool = True, do_monuseg: bool = True,
                name: str | None = None, lone: bool = False, stain: bool | str = True,
                select_train: bool = False, queries_only: bool = False, fast: bool = False, tta: bool = False,
                holdout: bool = False) -> dict:
    """Score one model folder; ``lone``: the
    network on lone windows (no shared backbone pass), otherwise as its config says;
    ``queries_only``: a model with a dense head scored without it (transformer points only,
    threshold re-picked on the train hold-out); ``fast``: its dense head alone (the detect job's
    fast mode; threshold re-picked on the train hold-out); ``tta``: its dense head averaged over 4
    flips of each tile (`histoai detect --tta`) at the model's own threshold; ``holdout``: also
    score the 10 held-out training tiles (the selection split) at the row's settings."""
    from napari_histoai.methods.detection.predict import load_acformer
    from napari_histoai.models import read_config, resolve_model

    if read_config(resolve_model(path))["kind"] == "densemap-detector":
        if lone or select_train:   # its threshold was already picked on the train hold-out
            return None
        return bench_densemap(path, smoke=smoke, do_speed=do_speed, do_monuseg=do_monuseg, name=name, stain=stain)
    if (fast or tta) and not load_acformer(path, device="cpu").model.dense_head:
        return None
    det = load_acformer(path, device="cpu", fast=fast, tta=tta)
    if tta:
        name = (name or read_config(resolve_model(path)).get("name", Path(path).name)) + " (test-time flips)"
    variant = [v for v, on in (("fast", fast), ("tta", tta), ("lone", lone), ("queries", queries_only), ("select", select_train),
                               ("nostain", stain is False), ("always", stain == "always")) if on]
    if fast:
        select_train = True
        name = (name or read_config(resolve_model(path)).get("name", Path(path).name)) + " (fast: dense head only)"
    if lone and not det.windowed:
        return None  # already on lone windows
    if queries_only:
        if det.model.dense_head is None or det.cfg.dense_backbone_lr_mult > 0:
            return None  # no head, or a backbone tuned for the head (the transformer no longer fits)
        det.cfg = det.cfg.replace(dense_mix=0.0)
        select_train = True
        name = (name or read_config(resolve_model(path)).get("name", Path(path).name)) + " (queries only)"
    if lone:
        det.windowed = False
        det.set_window(det.window, det.window_overlap)
        name = (name or read_config(resolve_model(path)).get("name", Path(path).name)) + " (lone windows)"
    if stain is not True:
        if det.stain_target is None or (stain == "always" and det.stain_radius is None):
            return None  # no stain matching anyway / already matching every image
        if stain == "always":
            det.stain_radius = None
        else:
            det.stain_target = None
        name = (name or read_config(resolve_model(path)).get("name", Path(path).name)) + STAIN_SUFFIX[stain]
    cfg = read_config(resolve_model(path))
    crc = DATA / "crchisto"
    val = _load(crc / "val", det.classes, 2 if smoke else None)
    if select_train:
        from napari_histoai.methods.detection.selection import pick_threshold as pick_on
        from napari_histoai.methods.detection.selection import selection_split

        _, sel = selection_split(_load(crc / "train", det.classes))
        det.threshold, _ = pick_on(det, sel, 0.5)
        name = (name or cfg.get("name", Path(path).name)) + " (threshold on train hold-out)"
    row = {"model": str(path), "variant": "+".join(variant), "name": name or cfg.get("name", Path(path).name),
           "threshold": det.threshold, "precision": str(det.low_precision or "float32"),
           "window": det.window, "window_overlap": det.window_overlap, "windowed": det.use_windows,
           "fusestyle": cfg["architecture"]["fusestyle"], "views": cfg["architecture"]["views"],
           "global_loss": cfg["architecture"]["global_loss"],
           "train_seconds": cfg.get("training", {}).get("train_seconds"),
           "train_steps": cfg.get("training", {}).get("steps")}
    row["crchisto_val"] = score_split(det, val, 0.5)
    if holdout:
        from napari_histoai.methods.detection.selection import selection_split

        row["holdout"] = score_split(det, selection_split(_load(crc / "train", det.classes))[1], 0.5)
    if do_monuseg and not smoke:
        mon = DATA / "monuseg" / "train"
        items = _load(mon, det.classes)
        row["monuseg_fd"] = score_split(det, items, 0.25)["f_d"]
    if do_speed and not smoke:
        row["mp_per_s"] = speed(det, val)
    return row


def bench_densemap(path: str, smoke: bool = False, do_speed: bool = True, do_monuseg: bool = True,
                   name: str | None = None, stain: bool | str = True) -> dict | None:
    """The plain dense-map peer (U-Net centre maps); its threshold was picked on the train hold-out."""
    from napari_histoai.methods.detection.densemap import load_densemap
    from napari_histoai.models import read_config, resolve_model

    det = load_densemap(path, device="cpu")
    if stain is not True:
        if det.stain_target is None or (stain == "always" and det.config.stain_radius is None):
            return None
        if stain == "always":
            det.config.stain_radius = None
        else:
            det.stain_target = None
        name = (name or f"dense-map U-Net peer ({Path(path).name})") + STAIN_SUFFIX[stain]
    cfg = read_config(resolve_model(path))
    tr = cfg.get("training", {})
    row = {"model": str(path), "variant": {True: "", False: "nostain", "always": "always"}[stain],
           "name": name or f"dense-map U-Net peer ({Path(path).name})", "threshold": det.threshold,
           "views": "–", "fusestyle": None, "global_loss": None, "train_seconds": tr.get("train_seconds"),
           "train_steps": tr.get("steps")}
    crc = DATA / "crchisto"
    val = _load(crc / "val", det.classes, 2 if smoke else None)
    row["crchisto_val"] = score_split(det, val, 0.5)
    if do_monuseg and not smoke:
        row["monuseg_fd"] = score_split(det, _load(DATA / "monuseg" / "train", det.classes), 0.25)["f_d"]
    if do_speed and not smoke:
        row["mp_per_s"] = speed(det, val)
    return row


STAIN_SUFFIX = {False: " (no stain matching)", "always": " (stain matching always)"}


def seed_summary(rows: list[dict], groups: dict) -> str:
    """Median and range over seeds: ``groups`` {row name: [model paths]}; a path ending in
    ``#variant`` (e.g. ``acformer-crc#fast``, ``runs/densemap/s0#nostain``) picks that variant's
    row (:func:`bench_model`), a bare path the model's plain row."""
    lines = ["| row | seeds | F_d median (range) | mean F_c median (range) | MoNuSeg F_d median (range) |",
             "|---|---|---|---|---|"]

    def mr(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "–"
        return f"{np.median(vals):.3f} ({min(vals):.3f}-{max(vals):.3f})"
    for gname, paths in groups.items():
        def key(r):
            v = r.get("variant", "")
            return r["model"] + (f"#{v}" if v else "")
        rs = list({key(r): r for r in reversed(rows) if key(r) in paths}.values())  # one per model
        lines.append(f"| {gname} | {len(rs)} | {mr([r['crchisto_val']['f_d'] for r in rs])} | "
                     f"{mr([r['crchisto_val']['mean_f_c'] for r in rs])} | {mr([r.get('monuseg_fd') for r in rs])} |")
    return "\n".join(lines)


def bench_classical(classes: list[str], smoke: bool = False, do_speed: bool = True) -> dict:
    """The weights-free baseline row: hematoxylin peaks (one class, so no F_c)."""
    from napari_histoai.methods.classical import ClassicalDetector

    det = ClassicalDetector()
    crc = DATA / "crchisto"
    val = _load(crc / "val", classes, 2 if smoke else None)
    for it in val:  # one class: every nucleus counts for detection only
        it.labels = np.full(len(it.labels), -1)
    v = score_split(det, val, 0.5)
    row = {"model": "classical", "name": "classical detector (no weights)", "threshold": 0.0, "views": "–",
           "fusestyle": None, "global_loss": None, "crchisto_val": {**v, "f_c": [None] * len(classes), "mean_f_c": None}}
    if not smoke:
        items = _load(DATA / "monuseg" / "train", classes)
        row["monuseg_fd"] = score_split(det, items, 0.25)["f_d"]
        if do_speed:
            row["mp_per_s"] = speed(det, val)
    return row


def table(rows: list[dict], classes: list[str]) -> str:
    head = ["model", "views", "global", "FuseStyle", "windows", "thr", "F_d", *[f"F_c {c}" for c in classes], "mean F_c",
            "MoNuSeg F_d", "CPU MP/s", "train steps", "train time"]
    if any("holdout" in r for r in rows):
        head.insert(6, "hold-out F_d / mean F_c")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    onoff = lambda v: "–" if v is None else ("on" if v else "off")  # noqa: E731
    for r in rows:
        v = r["crchisto_val"]
        t = r.get("train_seconds")
        h = r.get("holdout")
        lines.append("| " + " | ".join([
            r["name"], r["views"], onoff(r["global_loss"]), onoff(r["fusestyle"]),
            "–" if "window" not in r else f"{r['window']}/{r['window_overlap']}" + (" shared" if r["windowed"] else " lone"),
            "–" if r["model"] == "classical" else f"{r['threshold']:g}",
            *([] if "hold-out F_d / mean F_c" not in head else
              ["–" if not h else f"{h['f_d']:.3f} / {h['mean_f_c']:.3f}"]), f(v["f_d"]), *[f(x) for x in v["f_c"]], f(v["mean_f_c"]),
            f(r.get("monuseg_fd")), "–" if r.get("mp_per_s") is None else f"{r['mp_per_s']:.2f}",
            str(r.get("train_steps") or "–"), "–" if not t else f"{t / 60:.0f} min"]) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help="model folders or names (default: acformer-crc)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--lone", action="store_true", help="also score windowed models on lone windows (reference path)")
    ap.add_argument("--no-stain-row", action="store_true", help="also score models without their stain matching")
    ap.add_argument("--stain-always-row", action="store_true",
                    help="also score models matching every image's stain (ignoring their training stain range)")
    ap.add_argument("--name", default=None, help="results file stem (default detection)")
    ap.add_argument("--no-baseline", action="store_true", help="leave out the classical detector row")
    ap.add_argument("--select-train", action="store_true",
                    help="also score AC-Former models at a threshold picked on the train hold-out (every 7th "
                         "train tile, scripts/train_densemap.py) instead of val")
    ap.add_argument("--fast-row", action="store_true",
                    help="also score models with a dense head in fast mode (the head alone; `histoai detect --fast`)")
    ap.add_argument("--tta-row", action="store_true",
                    help="also score models with a dense head with test-time flips (`histoai detect --tta`)")
    ap.add_argument("--holdout", action="store_true",
                    help="also score the plain and --tta-row rows on the 10 held-out training tiles (selection split)")
    ap.add_argument("--queries-only-row", action="store_true",
                    help="also score models with a dense head on their transformer points alone")
    ap.add_argument("--group", action="append", default=[], metavar="NAME=M1,M2,M3",
                    help="seeds of one row: print the median and range over these model folders")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    models = args.models or ["acformer-crc"]
    rows = [bench_model(m, smoke=args.smoke, do_speed=not args.no_speed, holdout=args.holdout) for m in models]
    if args.lone:
        rows += [r for m in models if (r := bench_model(m, smoke=args.smoke, do_speed=not args.no_speed, lone=True))]
    if args.select_train:
        rows += [r for m in models if (r := bench_model(m, smoke=args.smoke, do_speed=False, select_train=True))]
    if args.fast_row:
        rows += [r for m in models if (r := bench_model(m, smoke=args.smoke, do_speed=not args.no_speed, fast=True))]
    if args.tta_row:
        rows += [r for m in models if (r := bench_model(m, smoke=args.smoke, do_speed=not args.no_speed, tta=True,
                                                        holdout=args.holdout))]
    if args.queries_only_row:
        rows += [r for m in models if (r := bench_model(m, smoke=args.smoke, do_speed=not args.no_speed,
                                                        queries_only=True))]
    if args.no_stain_row:
        rows += [r for m in models if (r := bench_model(m, smoke=args.smoke, do_speed=not args.no_speed, stain=False))]
    if args.stain_always_row:
        rows += [r for m in models if (r := bench_model(m, smoke=args.smoke, do_speed=False, stain="always"))]
    from napari_histoai.methods.detection.registry import load_detector

    classes = load_detector(models[0], device="cpu").classes
    if not args.no_baseline:
        rows.append(bench_classical(classes, smoke=args.smoke, do_speed=not args.no_speed))
    md = table(rows, classes)
    groups = {g.split("=", 1)[0]: g.split("=", 1)[1].split(",") for g in args.group}
    if groups:
        md += "\n\nSeeds (median and range):\n\n" + seed_summary(rows, groups)
    stem = args.name or "detection"
    if args.smoke:
        stem += "_smoke"
    note = (f"\n\nPairing radius 3 µm (6 px at 20x, 12 px at 40x). F_c: HoVer-Net's reference definition "
            f"(per class only the pairs where the truth or the prediction is that class; weights 2, 2, 1, 1). "
            f"crchisto/val: 10 tiles (20x); MoNuSeg: 13 training tiles with centroids (40x, resampled "
            f"to the model's µm/px), F_d only; speed: detect job, 2000x2000 px at the model's µm/px, "
            f"{args.threads} CPU threads on a shared 2-core machine. Command: `python {' '.join(sys.argv)}`. "
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n")
    print(md + note)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(md + note)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"rows": rows, "command": sys.argv}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
