"""Fine-tune an AC-Former model with mixed supervision, as a job (yields ``Progress``).

Per EM round: **E-step** — the current global (EMA) network predicts on every image (tiled,
score floor ``pseudo_floor``, by default T: only what the model would report; near-duplicates
merged); predictions in the unreviewed area become pseudo labels by the rules of
:mod:`napari_histoai.methods.mixed_supervision` (patch filter T, weights clip(s V, 0, 1),
< 0.01 -> 0). **M-step** — ``steps`` optimiser steps of the shared training loop
(:class:`~napari_histoai.methods.detection.train.Trainer`), warm-started from the previous
round; each batch mixes fine / pseudo / negative crops at the ratio R; AC-Former's view
generator (AAT / random affine / crop), global EMA loss and FuseStyle are switches. After every
round the global network is validated on the held-out reviewed blocks (F_d, mean F_c); the best
of the start weights (round 0) and the rounds is saved (atomically, only at the very end: a
cancelled job leaves every existing model untouched).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ....engine.inference import infer
from ....engine.jobs import Progress
from ....errors import CancelFlag, JobError, check_cancel
from ...mixed_supervision import DEFAULTS, KINDS, mix_schedule, patch_filter, reweight
from ..train import Trainer
from .data import (
    MixedImage,
    crop_at,
    holdout_truth,
    ignore_mask,
    sample_crop,
    split_holdout,
    targets_of,
    unreviewed_area,
)

__all__ = ["MixedConfig", "mixed_train_job", "pseudo_label", "validate", "RETUNE_STEPS"]

RETUNE_STEPS = (-0.05, 0.05, 0.1, 0.15)  # threshold offsets tried by ``--retune-threshold``


@dataclass
class MixedConfig:
    """Settings of one fine-tuning run (see the module docstring); None / 0 = the start model's."""

    rounds: int = 2                   # EM rounds (E-step + M-step each)
    steps: int = 250                  # optimiser steps per round (a maximum when budget_seconds > 0);
                                      # 2 x 250 ~ 5 CPU-minutes on ten 500 px images
    budget_seconds: float = 0.0       # CPU seconds (process time) for the whole job; 0 = no limit
    T: Optional[float] = 0.4          # pseudo patch kept if its best score >= T (None = the model's
                                      # operating score threshold): confident pseudo labels only
    V: float = DEFAULTS["V"]          # pseudo weight = clip(score * V, 0, 1)
    zero_below: float = DEFAULTS["zero_below"]  # weights below this (after scaling) -> 0
    ratio: tuple = (4, 1, 1)          # fine : pseudo : negative crops per batch (paper 2:1:7)
    pseudo: bool = True               # pseudo labels from the model outside reviewed regions: from the
                                      # bundled model the best arm of the simulated user on 3 seeds (README)
    negatives: bool = True
    pseudo_floor: Optional[float] = None  # predictions below this score are not pseudo labels
                                      # (None = T: only what the model would report; paper-style 0.05)
    pseudo_negatives: bool = False    # True: unmatched proposals in kept pseudo patches are pushed to
                                      # background (the paper's hard pseudo maps); False: pseudo patches
                                      # give positives only, their unlabelled rest is ignored
    pseudo_merge: float = 6.0         # px: merge pseudo points closer than this
    crop_size: int = 0                # 0 = the model's training crop
    batch_images: int = 0             # 0 = the model's
    lr: float = 1e-4
    views: str = ""                   # "" = the model's; aat | affine | crop | none
    global_loss: Optional[bool] = False  # None = the model's setting; off as in the benchmark's best arm
    global_warmup: int = 0
    fusestyle: Optional[bool] = None
    dense_only: Optional[bool] = None  # None = the model's (a head trained alone stays alone); False = all
    threshold_steps: tuple = ()       # e.g. (-0.05, 0.05, 0.1, 0.15): re-pick the operating score threshold
                                      # with each round's weights among start + these, on the held-out reviewed
                                      # blocks; off by default: with the simulated user's small hold-outs
                                      # (100-200 nuclei) it lost in and out of domain (README, "Correct and train")
    val_fraction: float = 0.2
    holdout_block: int = 96
    color_jitter: float = 0.05
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"], d["threshold_steps"] = list(self.ratio), list(self.threshold_steps)
        return d


def _model_config(arch: dict, m: MixedConfig):
    from ..configs import ACFormerConfig

    cfg = ACFormerConfig.from_dict(arch)
    # a model whose dense head was trained alone on the frozen network (the bundled one) learns
    # from corrections the same way: the head alone (benchmarks/results/mixed_dense*.md)
    over = {"lr": m.lr, "warmup_steps": 0}
    if m.views:
        over["views"] = m.views
    if m.global_loss is not None:
        over["global_loss"] = bool(m.global_loss)
    if m.fusestyle is not None:
        over["fusestyle"] = bool(m.fusestyle)
    if m.dense_only is not None:
        over["dense_only"] = bool(m.dense_only)
    if m.crop_size:
        over["crop_size"] = int(m.crop_size)
    if m.batch_images:
        over["batch_images"] = int(m.batch_images)
    return cfg.replace(**over)


def pseudo_label(item: MixedImage, yx, cls, score, m: MixedConfig, patch: int, T: Optional[float] = None) -> dict:
    """Apply the E-step rules to one image's predictions (``yx`` [N, 2] px, ``cls`` [N],
    ``score`` [N]); sets ``item.pseudo*``. -> stats. ``T`` overrides ``m.T`` (the paper's 0.4
    when both are None)."""
    T = T if T is not None else (m.T if m.T is not None else DEFAULTS["T"])
    area = unreviewed_area(item)
    h, w = item.shape
    yx = np.asarray(yx, np.float32).reshape(-1, 2)
    iy = np.clip(np.floor(yx[:, 0] + 0.5).astype(int), 0, h - 1)
    ix = np.clip(np.floor(yx[:, 1] + 0.5).astype(int), 0, w - 1)
    inside = area[iy, ix] if len(yx) else np.zeros(0, bool)
    yx, cls, score = yx[inside], np.asarray(cls)[inside], np.asarray(score)[inside]
    cells, keep = patch_filter(yx, score, (h, w), patch, T, area=area)
    wts = reweight(score, m.V, m.zero_below)
    k = keep & (wts > 0)
    item.pseudo = cells
    item.pseudo_points, item.pseudo_labels = yx[k].astype(np.float32), cls[k].astype(np.int64)
    item.pseudo_weights = wts[k].astype(np.float32)
    return {"n_pseudo": int(k.sum()), "pseudo_area": float(cells.mean()), "mean_weight": float(wts[k].mean()) if k.any() else 0.0}


def validate(detector, items: list[MixedImage], radius: float = 6.0, margin: int = 32,
             thresholds: tuple = (), matched_shift: float = 0.0) -> dict:
    """F_d / F_c of ``detector`` on the held-out reviewed blocks (points of class -1 count for
    detection only), at its own score threshold and, if given, at each of ``thresholds``; the
    best of them (F_d + mean F_c; ties: the detector's own) is returned, with its ``threshold``.
    Items already matched to the training stain (``item.matched``) are scored at threshold +
    ``matched_shift``, as the saved model would detect them. Empty dict when nothing is held out."""
    from ....engine.inference import infer_array
    from ....metrics import pooled_classification_scores

    if not any(it.holdout for it in items):
        return {}
    own = float(detector.threshold)
    blocks = []  # one inference at the lowest threshold; a higher one keeps the points scoring above it
    detector.threshold = max(0.01, min((own, *thresholds)) + min(0.0, matched_shift))
    try:
        for it in items:
            h, w = it.shape
            for blk in it.holdout:
                y0, x0, y1, x1 = blk
                a0, b0, a1, b1 = max(0, y0 - margin), max(0, x0 - margin), min(h, y1 + margin), min(w, x1 + margin)
                p, c, s = infer_array(detector, it.image[a0:a1, b0:b1]).arrays()  # tiled at the model's tile size
                p = p + np.array([a0, b0])
                k = (p[:, 0] >= y0 - 0.5) & (p[:, 0] < y1 - 0.5) & (p[:, 1] >= x0 - 0.5) & (p[:, 1] < x1 - 0.5)
                shift = matched_shift if it.matched else 0.0
                blocks.append((p[k], c[k], s[k], *holdout_truth(it, blk), shift))
    finally:
        detector.threshold = own
    best = {}
    for t in (own, *[t for t in thresholds if t != own]):
        kept = (s >= min(0.99, max(0.01, t + d)) for _p, _c, s, _g, _l, d in blocks)
        r = pooled_classification_scores(((p[k], c[k], gt, gl) for (p, c, _s, gt, gl, _d), k in zip(blocks, kept)),
                                         len(detector.classes), radius)
        v = {k: r[k] for k in ("f_d", "mean_f_c", "f_c", "n_true")}
        v["threshold"] = round(float(t), 4)
        if not best or _score(v) > _score(best):
            best = v
    return best


def _score(v: dict) -> float:
    if not v:
        return -1.0
    fc = v["mean_f_c"] if np.isfinite(v["mean_f_c"]) else 0.0
    return v["f_d"] + fc


def mixed_train_job(start_model, items: list[MixedImage], out: str | Path, m: Optional[MixedConfig] = None,
                    device="cpu", seed: int = 0, cancel: Optional[CancelFlag] = None, name: Optional[str] = None,
                    extra_config: Optional[dict] = None):
    """Fine-tune ``start_model`` (name or folder of an AC-Former model) on ``items``; save the
    best round to the model folder ``out``. Yields ``Progress`` whose ``info`` has ``loss``,
    ``class``, ``point`` (+ ``global``), ``round``, ``step`` and, after each round, ``val``.
    Returns a summary dict (``model``, ``val_before``, ``val``, ``rounds``, ...)."""
    from ....engine.devices import seed_everything
    from ....models import load_checkpoint, load_state_strict, save_checkpoint
    from ..model import build_model
    from ..predict import KIND, ACFormerDetector

    m = m or MixedConfig()
    if not items:
        raise JobError("no training image")
    out = Path(out)
    t_start = time.process_time()
    yield Progress(0, 0, f"loading {start_model}")
    state, config = load_checkpoint(start_model, KIND)
    cfg = _model_config(config.get("architecture") or {}, m)
    seed_everything(seed)
    device = torch.device(device)
    model = build_model(cfg)
    load_state_strict(model, state, f"model {start_model}")
    model.to(device)
    for it in items:
        if len(cfg.classes) != len(config.get("classes", cfg.classes)):
            raise JobError("model classes are inconsistent")
        split_holdout(it, m.val_fraction, m.holdout_block, seed)
        if not m.negatives:
            it.negative = np.zeros_like(it.negative)
    if cfg.stain_target is not None:
        # train on what the detector will see: each image matched to the training stain once; the
        # job's own detectors then work on these images as they are (no second mapping)
        from ...stain import apply_lut, matching_lut, od_stats

        for it in items:
            lut = matching_lut(od_stats(it.image), cfg.stain_target, cfg.stain_spread, cfg.stain_radius)
            if lut is not None:
                it.image, it.matched = apply_lut(it.image, lut), True
    det_cfg = cfg.replace(stain_target=None)
    avail_fine = any(it.has("fine") for it in items) or any(len(it.extra_points) for it in items)
    if not avail_fine and not m.pseudo:
        raise JobError("mark at least one reviewed region (with its points corrected) before training")
    tr = Trainer(model, cfg, seed, global_warmup=m.global_warmup)
    ema = tr.ema

    def detector(threshold=None, merge=0.0):
        d = ACFormerDetector(ema.module, det_cfg, name=name or out.name, device=device, threshold=threshold)
        d.min_distance = merge
        return d

    T = float(m.T) if m.T is not None else float(cfg.score_threshold)
    grid = tuple(sorted({round(min(0.95, max(0.05, cfg.score_threshold + d)), 4) for d in m.threshold_steps}))
    # the start model detects images outside its training stains at threshold + shift; a trained
    # round has learnt these images' stain from the corrections, so it is saved (and validated)
    # without the shift: with it, corrections on MoNuSeg lost 0.010 F_d (README, "Correct and train")
    shift = float(cfg.stain_matched_shift or 0.0)
    val_before = validate(detector(), items, matched_shift=shift)
    # round 0: the start weights (with the threshold re-picked when asked)
    val_start = validate(detector(), items, thresholds=grid, matched_shift=shift) if grid else val_before
    # the start weights are round 0: a round is kept only if it beats them on the held-out reviewed
    # blocks (without a hold-out, the last round); so training never saves a model the user's own
    # held-out corrections score worse (from the head-only bundled model, 5 CPU-minutes of head
    # training raised its scores and lost precision: README, "Correct and train")
    best_state = {k: t.detach().cpu().clone() for k, t in ema.module.state_dict().items()}
    best_val, best_round = val_start, 0
    total = m.rounds * m.steps
    budget = m.budget_seconds if m.budget_seconds and m.budget_seconds > 0 else None
    rounds = []
    yield Progress(0, total, "validation before training", {"val": val_before, "round": 0, "step": 0})
    for r in range(1, m.rounds + 1):
        # ---------------------------------------------------------------- E-step
        stats = {}
        if m.pseudo:
            det = detector(threshold=T if m.pseudo_floor is None else m.pseudo_floor, merge=m.pseudo_merge)
            for it in items:
                res = yield from _relabel(infer(it.image, det, mpp=det.mpp, tissue_only=False, cancel=cancel),
                                          tr.n, total, f"round {r}: pseudo labels on {it.name}")
                yx, c, s = res.points, res.class_ids, res.scores
                stats[it.name] = pseudo_label(it, yx, c, s, m, cfg.crop_size, T)
            ema.module.eval()
        avail = [any(it.has(k) for it in items) for k in KINDS]
        avail[0] = avail[0] or avail_fine
        rng = np.random.default_rng([seed, r])
        try:
            schedule = mix_schedule(m.ratio, avail, m.steps * cfg.batch_images, rng)
        except ValueError as e:
            raise JobError(str(e)) from None
        tg = {it.name: (targets_of(it), ignore_mask(it, m.pseudo_negatives)) for it in items}
        # ---------------------------------------------------------------- M-step
        deadline = None if budget is None else t_start + budget * r / m.rounds
        next_batch = partial(_mixed_batch, items=items, schedule=schedule, tg=tg, cfg=cfg, m=m, rng=rng,
                             deadline=deadline)
        done_round = 0
        for info in tr.fit(next_batch, m.steps, cancel):
            done_round += 1
            info.update(round=r, step=tr.n)
            yield Progress(tr.n, total, f"round {r}/{m.rounds} step {done_round}: loss {info['loss']:.3f}", info)
        # ---------------------------------------------------------------- validation
        ema.module.eval()
        val = validate(detector(), items, thresholds=grid)
        rounds.append({"round": r, "steps": done_round, "val": val, "pseudo": stats})
        yield Progress(tr.n, total, f"round {r}: validation " + (f"F_d {val['f_d']:.3f}" if val else "n/a"),
                       {"val": val, "round": r, "step": tr.n})
        if not val or _score(val) > _score(best_val):
            best_state = {k: t.detach().cpu().clone() for k, t in ema.module.state_dict().items()}
            best_val, best_round = val, r
        if budget is not None and time.process_time() - t_start >= budget:
            break
    check_cancel(cancel)
    threshold = float(best_val.get("threshold", cfg.score_threshold)) if best_val else float(cfg.score_threshold)
    train_cfg = cfg.replace(lr=config.get("architecture", {}).get("lr", cfg.lr), score_threshold=threshold,
                            stain_matched_shift=shift if best_round == 0 else 0.0)
    summary = {"T": T, "model": str(out), "start_model": str(start_model), "val_before": val_before, "val": best_val,
               "selected_round": best_round, "threshold": threshold,
               "threshold_before": float(cfg.score_threshold), "rounds": rounds, "steps": tr.n,
               "cpu_seconds": round(time.process_time() - t_start, 1), "mixed": m.to_dict()}
    new_cfg = {k: v for k, v in config.items() if k not in ("metrics", "package_version")}
    new_cfg.update({"kind": KIND, "name": name or out.name, "architecture": train_cfg.to_dict(),
                    "classes": list(cfg.classes), "mpp": cfg.mpp})
    new_cfg["training"] = {"method": "mixed supervision fine-tuning", "start_model": str(start_model),
                           "images": [it.name for it in items], "seed": seed, "steps": tr.n,
                           "cpu_seconds": summary["cpu_seconds"], **(extra_config or {})}
    new_cfg["metrics"] = {"val_heldout_reviewed": best_val, "val_before": val_before, "rounds": rounds,
                          "selected_round": best_round, "threshold_before": float(cfg.score_threshold)}
    save_checkpoint(out, best_state, new_cfg)
    return summary


def _mixed_batch(s_i: int, items: list[MixedImage], schedule: list[str], tg: dict, cfg, m: MixedConfig,
                 rng: np.random.Generator, deadline: Optional[float]):
    """Batch ``s_i`` of a round: B crops of the kinds ``schedule[s_i * B:(s_i + 1) * B]`` with
    their targets and ignored areas (``tg``: image name -> (targets, ignore mask)), in the form
    ``Trainer.fit`` takes; None once the process time reaches ``deadline``."""
    if deadline is not None and time.process_time() >= deadline:
        return None
    crops, targets, igns = [], [], []
    for kind in schedule[s_i * cfg.batch_images:(s_i + 1) * cfg.batch_images]:
        pool = [it for it in items if it.has(kind)] or [it for it in items if len(it.extra_points)]
        it = pool[int(rng.integers(len(pool)))]
        if it.has(kind):
            y0, x0 = sample_crop(it, kind, cfg.crop_size, rng)
        else:  # only user points outside reviewed regions: crop around one of them
            p = it.extra_points[int(rng.integers(len(it.extra_points)))]
            y0 = int(np.clip(p[0] - cfg.crop_size // 2, 0, max(0, it.shape[0] - cfg.crop_size)))
            x0 = int(np.clip(p[1] - cfg.crop_size // 2, 0, max(0, it.shape[1] - cfg.crop_size)))
        c, p, lab, wt, ig = crop_at(it, y0, x0, cfg.crop_size, rng, m.color_jitter, *tg[it.name])
        crops.append(torch.from_numpy(c))
        targets.append({"points": torch.from_numpy(p), "labels": torch.from_numpy(lab), "weights": torch.from_numpy(wt)})
        igns.append(torch.from_numpy(ig))
    return torch.stack(crops), targets, torch.stack(igns)


def _relabel(job, step, total, message):
    """Forward a sub-job's pauses as Progress(step, total, message); return its value."""
    try:
        while True:
            next(job)
            yield Progress(step, total, message)
    except StopIteration as stop:
        return stop.value
