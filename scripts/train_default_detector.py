#!/usr/bin/env python
"""Reproduce the bundled default nuclei detector ``resources/models/acformer-crc``.

Trains the compact AC-Former (AAT views + global EMA loss + FuseStyle) on
CRCHistoPhenotypes ``train`` (70 tiles, 20x ~ 0.5 µm/px); ``val`` (10 tiles) is used only to
select the checkpoint and the score threshold. Resumable: run the same command again after an
interruption. Then ``--finalize`` copies the selected model into the package with a model card.

    python scripts/train_default_detector.py --out runs/acformer-crc --log runs/acformer-crc.jsonl
    python scripts/train_default_detector.py --out runs/acformer-crc --finalize

The bundled model today is that network (``--init-from acformer-crc``) plus a dense head trained
alone on it, selected on the training hold-out (``--select-holdout``: 60 tiles train, every 7th
of the 70 selects; val only reports); the README's detection section has the exact commands.
``--device cuda`` trains on a GPU (``scripts/device/train_detector_gpu.sh`` on a lent machine).

The network it starts from is the compact config trained for 4800 steps (its 1600-step schedule stretched
3x: lr drop at 60%, global loss from 62.5% of the steps); ``--steps 1600`` gives the compact budget
used by the ablation. Run it in the background with ``nohup ... &``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from napari_histoai.methods.detection.predict import merge_close_points

ROOT = Path(__file__).resolve().parents[1]
DATA = (Path(os.environ.get("HISTOAI_DATA", ROOT / ".." / "shared" / "data")) / "crchisto").resolve()
DEST = ROOT / "resources" / "models" / "acformer-crc"


def train(args) -> int:
    import torch

    from napari_histoai.engine.devices import pick_device
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.detection.configs import get_config
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.train import train_job

    torch.set_num_threads(args.threads)
    over = {"steps": args.steps} if args.steps else {}
    for kv in args.set or []:
        k, v = kv.split("=", 1)
        over[k] = json.loads(v)
    if args.steps and "global_warmup" not in over:
        # keep the compact schedule's proportions: global loss from step 1000 of 1600 (after the lr drop)
        over["global_warmup"] = int(round(args.steps * 1000 / 1600))
    if args.init_from:  # continue from a model: its configuration (inference settings included) + overrides
        from napari_histoai.methods.detection.configs import ACFormerConfig
        from napari_histoai.models import read_config, resolve_model

        cfg = ACFormerConfig.from_dict(read_config(resolve_model(args.init_from))["architecture"]).replace(**over)
    else:
        cfg = get_config(args.config, **over)
    tr = load_folder(DATA / "train" / "images", DATA / "train" / "points", cfg.classes, 0.5, cfg.mpp)
    if args.select_holdout:
        from napari_histoai.methods.detection.selection import selection_split

        tr, va = selection_split(tr)  # the hold-out is never trained on
        data = ("CRCHistoPhenotypes train: 60 tiles trained on, every 7th by name (10 tiles) held out to select "
                "checkpoints")
    elif args.refit:
        va = None  # no selection during the run: the final network is kept (finalize --settings-from)
        data = ("CRCHistoPhenotypes train: all 70 tiles (a refit: the step count and inference settings were picked "
                "on the training hold-out by the same recipe's 60-tile run; nothing selects on this run)")
    else:
        va = load_folder(DATA / "val" / "images", DATA / "val" / "points", cfg.classes, 0.5, cfg.mpp)
        data = "CRCHistoPhenotypes train (70 tiles), val (10 tiles) for selection"
    if args.extra_monuseg:
        more = monuseg_mask_items(cfg.mpp)
        tr = tr + more
        data += (f"; plus {len(more)} MoNuSeg training tiles with binary masks only (detection targets = watershed "
                 "centres of the masks, class unknown; stain-matched as at inference; the 13 MoNuSeg tiles with "
                 "centroids, which the benchmark scores, are not trained on)")
    extra = {"training": {"data": data, "command": " ".join(["python"] + sys.argv), "config_name": args.config,
                          **({"init_from": args.init_from, "base": base_training(args.init_from)}
                             if args.init_from else {}),
                          **({"backbone_weights": args.backbone_weights} if args.backbone_weights else {})}}
    t0 = time.time()

    def show(p):
        if p.done % 10 == 0 or "val" in p.info:
            i = p.info
            msg = f"step {p.done}/{p.total} loss {i['loss']:.3f} cls {i['class']:.3f} pt {i['point']:.3f} {time.time() - t0:.0f}s"
            if "dense" in i:
                msg += f" dense {i['dense']:.3f}"
            if "val" in i and i["val"]:
                msg += " val " + json.dumps({k: [round(v['f_d'], 3), round(v['mean_f_c'], 3)] for k, v in i["val"].items()})
            print(msg, flush=True)

    run_job(train_job(cfg, tr, args.out, val=va, device=str(pick_device(args.device)), seed=args.seed, resume=True,
                      ckpt_every=50, eval_every=args.eval_every, log_path=args.log, extra_config=extra,
                      init_from=args.init_from, backbone_weights=args.backbone_weights), show)
    return 0


def training_stain_range():
    """(target, spread, radius) of the CRCHistoPhenotypes training tiles' stains (all 70):
    what the detector carries to decide which inputs to match (methods/stain.py)."""
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.stain import stain_range

    home = load_folder(DATA / "train" / "images", DATA / "train" / "points", ["x"], 0.5, 0.5)
    return stain_range([it.image for it in home])


def monuseg_mask_items(model_mpp: float) -> list:
    """The MoNuSeg training tiles that have binary masks only (17 of 30; 40x = 0.25 µm/px) as
    detection-only items at ``model_mpp``, stain-matched to the CRCHistoPhenotypes training tiles
    the way the detector matches an input at inference (only where it lies outside their range)."""
    import csv

    from napari_histoai.methods.detection.data import load_mask_folder
    from napari_histoai.methods.stain import apply_lut, matching_lut, od_stats

    mon = DATA.parent / "monuseg" / "train"
    with open(mon / "split.csv", newline="") as f:
        names = [r["name"] for r in csv.DictReader(f) if r["label_kind"].startswith("binary_only")]
    items = load_mask_folder(mon / "images", mon / "masks_binary", 0.25, model_mpp, names=names)
    target, spread, radius = training_stain_range()
    for it in items:
        lut = matching_lut(od_stats(it.image), target, spread, radius)
        if lut is not None:
            it.image = apply_lut(it.image, lut)
    return items


def _raw_detections(det, items, tile: int, overlap: int, windowed: bool):
    """Detections at a low threshold with the network on ``tile`` px windows (lone windows, or
    one backbone pass per large tile when ``windowed``) -> (per-image results, CPU seconds)."""
    from napari_histoai.engine.inference import infer_array

    det.threshold, det.min_distance = 0.05, 0.0
    det.windowed = windowed
    det.set_window(tile, overlap)
    t = time.process_time()
    raw = [infer_array(det, it.image).arrays() for it in items]
    return raw, time.process_time() - t


def _score(items, raw, thr: float, md: float, n_classes: int) -> dict:
    from napari_histoai.metrics import pooled_classification_scores

    def per_image():
        for it, (p, c, s) in zip(items, raw):
            k = s >= thr
            p, c, _ = merge_close_points(p[k], c[k], s[k], md)
            yield p, c, it.points, it.labels

    r = pooled_classification_scores(per_image(), n_classes, radius=6.0)
    return {k: r[k] for k in ("f_d", "precision", "recall", "f_c", "mean_f_c")}


WINDOWS = ((128, 32, False), (128, 16, False), (256, 48, False), (128, 32, True), (128, 16, True))
DENSE_MIXES = (0.0, 0.3, 0.5, 0.7, 1.0)


SETTINGS = ("score_threshold", "min_distance", "tile_size", "overlap", "windowed", "dense_mix")


def finalize_refit(args) -> int:
    """Finalize a ``--refit`` run (all 70 training tiles, nothing held out): its final EMA network
    with the inference settings of ``--settings-from`` (the same recipe's 60-tile run, whose
    checkpoint and settings the training hold-out picked) and the training tiles' stain range;
    nothing is selected here. Then run ``scripts/pick_matched_shift.py`` on it as usual."""
    import torch

    from napari_histoai.methods.detection.train import state_dir
    from napari_histoai.models import load_checkpoint, read_config, resolve_model, save_checkpoint

    src = Path(args.out)
    last = state_dir(src) / "last.pt"
    _, cfg = load_checkpoint(src)
    if not last.is_file():
        raise SystemExit(f"{src}: no training state (last.pt): not a finished --refit run")
    st = torch.load(str(last), map_location="cpu", weights_only=True)
    if int(st["step"]) != cfg["architecture"]["steps"]:
        raise SystemExit(f"{src}: the run stopped at step {st['step']} of {cfg['architecture']['steps']}")
    ref_dir = resolve_model(args.settings_from)
    ref = read_config(ref_dir)
    a = cfg["architecture"]
    a.update({k: ref["architecture"][k] for k in SETTINGS if k in ref["architecture"]})
    target, spread, radius = training_stain_range()
    a.update(stain_target=target.round(5).tolist(), stain_spread=spread.round(5).tolist(), stain_radius=round(radius, 4))
    a.pop("stain_matched_shift", None)  # picked afresh for this network (pick_matched_shift.py)
    cfg["training"]["steps"] = int(st["step"])
    cfg["training"]["train_seconds"] = round(float(st["time"]), 1)
    cfg["training"]["settings_from"] = str(args.settings_from)
    ref_sel = ref.get("metrics", {})
    cfg["metrics"] = {"selected_at_step": int(st["step"]),
                      "selected_on": (f"{ref_sel.get('selected_on', 'training hold-out')}, by the same recipe's "
                                      f"60-tile run ({args.settings_from}); this refit trained on those tiles too"),
                      "val_selected": {"candidate": f"final EMA (step {st['step']}), settings copied"}}
    cfg["name"] = Path(args.dest).name if args.dest else "acformer-crc"
    dest = Path(args.dest) if args.dest else DEST
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in st["ema"].items()}
    cfg["weights_dtype"] = "float16"
    save_checkpoint(dest, sd, cfg)
    cfg = read_config(dest)
    (dest / "MODEL_CARD.md").write_text(model_card(cfg))
    print(f"wrote {dest}: final EMA (step {st['step']}) with {', '.join(f'{k}={a[k]}' for k in SETTINGS if k in a)}")
    return 0


def finalize(args) -> int:
    """Model selection on val, or with ``--select-holdout`` on the training hold-out (every 7th
    train tile; val then stays a report-only split): the stain target = mean optical-density
    statistics of the train images; candidates = the best checkpoint saved during training and
    the final global (EMA) network; grid = the network's input window and overlap (128/32, 128/16,
    256/48 px), lone windows or windowed tiles (one backbone pass per tile) — or, for a model with
    a dense head, its weight in the fused score (:data:`DENSE_MIXES`) at the trained windows —,
    score threshold, optional duplicate merge distance (0, 4 px); score = F_d + mean F_c, and of
    settings within 0.005 of the best the one with the least CPU time wins. The winner goes into
    the package (or ``--dest``) with a model card."""
    import torch

    from napari_histoai.methods.detection.configs import ACFormerConfig
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.model import build_model
    from napari_histoai.methods.detection.predict import ACFormerDetector
    from napari_histoai.methods.detection.train import state_dir
    from napari_histoai.models import load_checkpoint, read_config, save_checkpoint

    torch.set_num_threads(args.threads)
    src = Path(args.out)
    state, cfg = load_checkpoint(src)
    cands = {f"best-during-training (step {cfg.get('metrics', {}).get('selected_at_step')})": (state, cfg)}
    last = state_dir(src) / "last.pt"
    if last.is_file():
        st = torch.load(str(last), map_location="cpu", weights_only=True)
        c2 = json.loads(json.dumps(cfg))
        c2["training"]["steps"] = int(st["step"])
        c2["training"]["train_seconds"] = round(float(st["time"]), 1)
        c2["metrics"] = {"selected_at_step": int(st["step"])}
        cands[f"final EMA (step {st['step']})"] = ({k: v for k, v in st["ema"].items()}, c2)
    va = None
    grid = {}
    # the training images' stain: inputs from other labs are matched to it (methods/stain.py)
    target, spread, radius = training_stain_range()  # images within the radius stay as they are
    for cname, (sd, c) in cands.items():
        c["architecture"].update(stain_target=target.round(5).tolist(), stain_spread=spread.round(5).tolist(),
                                 stain_radius=round(radius, 4))
        acfg = ACFormerConfig.from_dict(c["architecture"])
        model = build_model(acfg)
        model.load_state_dict(sd)
        det = ACFormerDetector(model, acfg, device="cpu")
        if va is None:
            if args.select_holdout:
                from napari_histoai.methods.detection.selection import selection_split

                va = selection_split(load_folder(DATA / "train" / "images", DATA / "train" / "points",
                                                 det.classes, 0.5, acfg.mpp))[1]
            else:
                va = load_folder(DATA / "val" / "images", DATA / "val" / "points", det.classes, 0.5, acfg.mpp)
        if acfg.dense_head:  # windows as trained; the grid is the head's weight in the fused score
            # a backbone tuned for the head no longer fits the transformer: the head alone
            mixes = (1.0,) if acfg.dense_backbone_lr_mult > 0 else DENSE_MIXES
            settings = [(acfg.tile_size, acfg.overlap, acfg.windowed, mix) for mix in mixes]
        else:
            settings = [(t, o, w, 0.0) for t, o, w in WINDOWS]
        for tile, ov, win, mix in settings:
            det.cfg = acfg.replace(dense_mix=mix)
            raw, secs = _raw_detections(det, va, tile, ov, win)
            for thr in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
                for md in (0.0, 4.0):
                    r = _score(va, raw, thr, md, len(det.classes))
                    key = f"{cname} tile={tile} overlap={ov} windowed={win} mix={mix:g} thr={thr:g} min_distance={md:g}"
                    grid[key] = {**r, "candidate": cname, "tile_size": tile, "overlap": ov, "windowed": win,
                                 "dense_mix": mix, "threshold": thr, "min_distance": md, "cpu_seconds": round(secs, 2)}
            print(cname, tile, ov, win, mix, f"{secs:.1f} CPU-s",
                  max(((k, v["f_d"], v["mean_f_c"]) for k, v in grid.items() if v["candidate"] == cname
                       and (v["tile_size"], v["overlap"], v["windowed"], v["dense_mix"]) == (tile, ov, win, mix)),
                      key=lambda t: t[1] + t[2]), flush=True)
    top = max(v["f_d"] + v["mean_f_c"] for v in grid.values())
    near = [k for k, v in grid.items() if v["f_d"] + v["mean_f_c"] >= top - 0.005]
    # of the settings within 0.005 of the best, the one with the least CPU time wins
    best_key = min(near, key=lambda k: (grid[k]["cpu_seconds"], -(grid[k]["f_d"] + grid[k]["mean_f_c"])))
    best = grid[best_key]
    sd, cfg = cands[best["candidate"]]
    a = cfg["architecture"]
    a["score_threshold"], a["min_distance"] = best["threshold"], best["min_distance"]
    a["tile_size"], a["overlap"], a["windowed"] = best["tile_size"], best["overlap"], best["windowed"]
    if a.get("dense_head"):
        a["dense_mix"] = best["dense_mix"]
    cfg.setdefault("metrics", {})["val_selected"] = best
    cfg["metrics"]["selected_on"] = "training hold-out (every 7th train tile)" if args.select_holdout else "val"
    cfg["metrics"]["val_grid"] = grid
    cfg["name"] = Path(args.dest).name if args.dest else "acformer-crc"
    dest = Path(args.dest) if args.dest else DEST
    # ship float16 weights (half the size; loading casts back to float32)
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    cfg["weights_dtype"] = "float16"
    save_checkpoint(dest, sd, cfg)
    cfg = read_config(dest)
    (dest / "MODEL_CARD.md").write_text(model_card(cfg))
    print(best_key, json.dumps(best))
    print(f"wrote {dest}")
    return 0


def base_training(init_from: str) -> dict:
    """What the model a run starts from was trained with (for its model card)."""
    from napari_histoai.models import read_config, resolve_model

    b = read_config(resolve_model(init_from))
    t, a = b.get("training", {}), b.get("architecture", {})
    return {k: t.get(k) for k in ("steps", "train_seconds", "device", "data", "command", "seed",
                                  "backbone_weights")} | {
        k: a.get(k) for k in ("global_loss", "global_warmup", "global_weight", "teacher_threshold")}


def model_card(cfg: dict) -> str:
    a, t, m = cfg["architecture"], cfg.get("training", {}), cfg.get("metrics", {})
    thr = f"{a['score_threshold']:g}"
    v = m.get("val_selected", {})
    on = m.get("selected_on", "val")
    how = ("afterwards on the frozen network's features (every other weight unchanged)" if a.get("dense_only")
           else "with the transformer")
    b = t.get("base") or {}
    if a.get("dense_only") and a.get("dense_backbone_lr_mult", 0) > 0:
        how = (f"afterwards with the backbone tuned for it (backbone lr x{a['dense_backbone_lr_mult']:g}, BatchNorm"
               "\n  statistics kept; the transformer's weights unchanged, so it no longer fits and is not used)" if b else
               f"on the backbone, tuned with it (backbone lr x{a['dense_backbone_lr_mult']:g}, BatchNorm statistics kept;"
               "\n  no base network: the transformer was never trained and is not used)")
        use = "at inference its peaks are the detections"
    elif a.get("dense_head") and a.get("dense_mix", 0) >= 1:
        use = ("at inference its peaks are the detections and the transformer is skipped: on the selection"
               "\n  split the fused score (head and query points) was not better by more than 0.005 and costs"
               "\n  about 3x the CPU time (`\"dense_mix\"` < 1 in config.json fuses them again)")
    else:
        use = f"at inference its peaks are fused with the query points (weight {a.get('dense_mix', 0):g} in the score)"
    dense = (f"\n- **Dense head**: CenterNet-style centre maps at stride 4 on backbone stages 1-3, trained"
             f"\n  {how}; {use}." if a.get("dense_head") else "")
    g = b if b else a   # the global loss belongs to the base network's training when there is one
    where = lambda d: f"{d.get('device')}" + (" (2 shared CPU cores)" if d.get("device") == "cpu" else "")  # noqa: E731
    if b:
        training = (f"the base network ({t.get('init_from')}): {b.get('steps')} steps, seed {b.get('seed')}, "
                    f"{b.get('train_seconds')} s on {where(b)}, on {b.get('data')} (`{b.get('command')}`); then "
                    f"{t.get('steps')} steps, seed {t.get('seed')}, {t.get('train_seconds')} s on {where(t)}. "
                    f"Command: `{t.get('command', '')}`, then `--finalize`")
    else:
        training = (f"{t.get('steps')} steps, seed {t.get('seed')}, {t.get('train_seconds')} s on {where(t)}. "
                    f"Command: `{t.get('command', '')}`, then `--finalize`")
    ssl = t.get("backbone_weights") or b.get("backbone_weights")
    origin = (f"started from self-supervised weights, {ssl}, trained on unlabelled H&E" if ssl
              else "from scratch, no pretrained weights")
    fc = ", ".join(f"{c} {x:.3f}" for c, x in zip(cfg["classes"], v.get("f_c", [])))
    stain = ("\n- **Stain matching**: an input whose stain lies outside the training images' (optical-density"
             "\n  mean and std per RGB channel over tissue, from the image's or slide's thumbnail; farther than"
             f"\n  {a.get('stain_radius')} rms z-scores, the 90th percentile of the training tiles) is matched to"
             "\n  their mean; one within it is left as it is (matching costs colour cues the classes need)."
             if a.get("stain_target") and a.get("stain_radius") is not None else
             "\n- **Stain matching**: inputs are matched to the training images' stain (optical-density mean"
             "\n  and std per RGB channel over tissue, from the image's or slide's thumbnail)."
             if a.get("stain_target") else "")
    if a.get("stain_target") and a.get("stain_matched_shift"):
        pick = (cfg.get("training") or {}).get("stain_matched_shift") or {}
        stain += (f"\n- **Matched images' threshold**: an image matched to the training stain is detected at score"
                  f"\n  threshold {a.get('score_threshold', 0) + a['stain_matched_shift']:.3f} (shift"
                  f" {a['stain_matched_shift']:+.3f}: the head is less sure on unfamiliar stains), picked on"
                  f"\n  {pick.get('picked_on', 'MoNuSeg mask-only tiles')} (`python scripts/pick_matched_shift.py MODEL --write`,"
                  f" run after `--finalize`); a threshold the user gives is used as it is.")
    if a.get("dense_head") and a.get("dense_mix", 0) < 1:
        stain += ("\n- **Fast mode** (`histoai detect --fast`, the dock's *Fast* box): the dense head's peaks alone,"
                  "\n  the transformer skipped. **Precision**: on CPUs with native bfloat16 the convolutions run in"
                  "\n  bfloat16 (float32 elsewhere; `HISTOAI_PRECISION=float32` forces it).")
    elif a.get("dense_head"):
        stain += ("\n- **Precision**: on CPUs with native bfloat16 the convolutions run in bfloat16 (float32"
                  "\n  elsewhere; `HISTOAI_PRECISION=float32` forces it).")
    if t.get("settings_from"):  # a refit: nothing was held out, so there is no selection score of its own
        selection = (f"- **Selection**: none on this network. It is a refit on all 70 training tiles of the recipe whose"
                     f"\n  60-tile run ({t['settings_from']}) the training hold-out picked (its final step and the settings"
                     f"\n  above); crchisto/val, MoNuSeg and speed: the README's detection table"
                     f"\n  (`benchmarks/bench_detection.py`).")
    else:
        selection = (f"- **Selection split ({on}, 10 tiles, 6 px)**: F_d {v.get('f_d', float('nan')):.3f}"
                     f"\n  (precision {v.get('precision', float('nan')):.3f}, recall {v.get('recall', float('nan')):.3f}),"
                     f"\n  F_c {fc}, mean F_c {v.get('mean_f_c', float('nan')):.3f} (HoVer-Net's F_c). These numbers are"
                     f"\n  optimistic (the split chose the settings{' and was trained on' if on != 'val' else ''}); crchisto/val,"
                     f"\n  MoNuSeg and speed: the README's detection table (`benchmarks/bench_detection.py`).")
    return f"""# acformer-crc: default nuclei detector (AC-Former, compact)

- **Method**: AC-Former (Huang et al., ICCV 2023): two-stage deformable point transformer with
  the Adaptive Affine Transformer (views={a['views']}, M={a['n_views']}), the global EMA network
  loss (alpha={g['global_weight']} after {g['global_warmup']} steps, teacher threshold
  {g['teacher_threshold']}) and FuseStyle ({a['fusestyle']}, partner {a['fusestyle_partner']}).
  Compact config: {a['backbone']} stages {a['backbone_stages']} ({origin})
  + {a['extra_levels']} extra level, d={a['d_model']}, {a['enc_layers']}+{a['dec_layers']} layers,
  {a['num_queries']} queries per {a['query_ref_size']}^2 px.
- **Classes**: {', '.join(cfg['classes'])}. **Resolution**: {cfg['mpp']} µm/px (20x); other
  resolutions are resampled by the detect job. The network runs on {a['tile_size']} px windows (overlap
  {a['overlap']}{', one backbone pass per 5 x 5 windows' if a.get('windowed') else ''}), score threshold {thr}, duplicate merge distance {a['min_distance']:g} px (0 = off);
  all chosen on {on} ({v.get('candidate', '')}).{stain}{dense}
- **Data**: {t.get('data', '')}. CRCHistoPhenotypes (Sirinukunwattana et al., IEEE TMI 2016),
  research use only; points of class `unlabeled` were detection targets of unknown class.
- **Training**: {training}.
{selection}
- **Limits**: a small model trained {'from self-supervised weights' if ssl else 'from scratch'} on 60-70 tiles of one organ (colorectal);
  expect lower accuracy on other tissues and stains.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "acformer-crc"))
    ap.add_argument("--log", default=None)
    ap.add_argument("--config", default="compact")
    ap.add_argument("--steps", type=int, default=4800,
                    help="steps (default 4800: the compact config's 1600-step schedule stretched 3x; 65 min of "
                         "step time here, half of it on cores shared with other runs; 0 = the config's own)")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="training device: cpu (the bundled model's), cuda or auto")
    ap.add_argument("--set", action="append", help="override a config value, e.g. --set global_warmup=1200 (JSON value)")
    ap.add_argument("--extra-monuseg", action="store_true",
                    help="also train on the 17 MoNuSeg tiles that have binary masks only (detection targets)")
    ap.add_argument("--init-from", default=None, help="start from this AC-Former model (folder or bundled name): "
                    "its weights and configuration; added parts (e.g. --set dense_head=true) start fresh")
    ap.add_argument("--backbone-weights", default=None, help="start the backbone from these torchvision-format "
                    "weights (e.g. scripts/pretrain_backbone.py's); the rest starts fresh")
    ap.add_argument("--select-holdout", action="store_true", help="select checkpoints on the training hold-out "
                    "(every 7th training tile) instead of val")
    ap.add_argument("--refit", action="store_true", help="train on all 70 training tiles with no selection during "
                    "the run (the recipe's steps and settings were picked by a --select-holdout run); finalize it "
                    "with --settings-from that run's model")
    ap.add_argument("--settings-from", default=None, help="with --finalize: keep the final network and copy the "
                    "inference settings (threshold, windows, merge distance) from this model instead of a grid")
    ap.add_argument("--finalize", action="store_true", help="copy the selected model into the package")
    ap.add_argument("--dest", default=None, help="with --finalize: write the model here instead of the package")
    args = ap.parse_args()
    if args.refit and args.select_holdout:
        ap.error("--refit trains on the hold-out too: it cannot also select on it")
    if args.finalize:
        return finalize_refit(args) if args.settings_from else finalize(args)
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
