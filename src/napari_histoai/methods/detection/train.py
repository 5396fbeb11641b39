"""AC-Former training: the one training loop (:class:`Trainer`), and training from scratch on
images + points as a job (:func:`train_job`, a generator yielding ``Progress``; see
``engine.jobs``). Fine-tuning from user corrections (``finetune``) runs the same loop.

One step (paper eq. 1): B crops -> the view generator makes M views per crop (AAT /
random affine / random crop / none) and the ground-truth points are moved into each view by
the same matrix (points leaving a view are dropped) -> the local network predicts on the views
-> Hungarian loss against the ground truth, plus (after ``global_warmup`` steps, weight
``global_weight``) against the global (EMA) network's thresholded predictions on the whole
crop, moved into each view the same way. Deep supervision on encoder + all decoder layers.
Targets may carry weights and crops an ignored area (mixed supervision; see ``loss``): the
ignored area is warped into each view like the pixels. The global network is updated as the
EMA of the local one after every step; it is the network that is validated and saved.

Checkpoints: ``<out>/`` is the best model so far (by F_d + mean F_c on the validation images, or
the last one without validation); ``<out>.state/last.pt`` holds what ``resume`` needs (tensors
and plain values only, read with ``weights_only=True``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ...engine.jobs import Progress
from ...errors import CancelFlag, JobError, check_cancel
from .aat import build_view_generator, transform_points, warp_images
from .configs import ACFormerConfig
from .data import PointImage, random_crop
from .dense_head import dense_loss
from .ema import ModelEMA
from .loss import build_criterion
from .model import build_model
from .predict import KIND, ACFormerDetector

__all__ = ["Trainer", "train_job", "evaluate", "state_dir", "RESUME_MAY_CHANGE"]

# schedule / inference settings that may differ when a run is resumed (e.g. to extend it)
RESUME_MAY_CHANGE = ("steps", "global_warmup", "global_weight", "teacher_threshold", "lr_drop",
                     "score_threshold", "min_distance", "tile_size", "overlap", "windowed", "stain_target", "stain_spread",
                     "stain_radius", "stain_matched_shift", "dense_mix")


def state_dir(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".state")


def _param_groups(model, views, cfg: ACFormerConfig) -> list:
    """AdamW groups: backbone at ``lr``, the rest of the network at ``lr * lr_transformer_mult``,
    the dense head (if any) at ``lr * lr_dense_mult``, the AAT (if any) at ``lr * lr_aat_mult``;
    ``base_lr`` is what the lr schedule scales."""
    bb, tr, dense = [], [], []
    for n, p in model.named_parameters():
        (bb if n.startswith("backbone.") else dense if n.startswith("dense_head.") else tr).append(p)
    bb_lr = cfg.lr * cfg.dense_backbone_lr_mult if cfg.dense_only else cfg.lr
    groups = [{"params": bb, "lr": bb_lr, "name": "backbone"},
              {"params": tr, "lr": cfg.lr * cfg.lr_transformer_mult, "name": "transformer"}]
    if dense:
        groups.append({"params": dense, "lr": cfg.lr * cfg.lr_dense_mult, "name": "dense"})
    aat = list(views.parameters())
    if aat:
        groups.append({"params": aat, "lr": cfg.lr * cfg.lr_aat_mult, "name": "aat"})
    for g in groups:
        g["base_lr"] = g["lr"]
    return groups


def _lr_factor(step: int, cfg: ACFormerConfig, steps: int) -> float:
    f = 1.0 if cfg.warmup_steps <= 0 else min(1.0, (step + 1) / cfg.warmup_steps)
    return f * (0.1 if step >= int(cfg.lr_drop * steps) else 1.0)


@torch.no_grad()
def _teacher_targets(ema_model, crops: torch.Tensor, thr: float) -> list:
    """The global network's predictions on whole crops [B, 3, s, s] kept at max prob >= thr ->
    B targets (points [G, 2] normalised to the crop, labels [G] = argmax class)."""
    out = ema_model(crops)
    probs = out["pred_logits"].sigmoid()
    score, lab = probs.max(-1)
    res = []
    for b in range(crops.shape[0]):
        k = score[b] >= thr
        res.append({"points": out["pred_points"][b][k].clamp(0, 1), "labels": lab[b][k]})
    return res


def _view_targets(targets: list, theta: torch.Tensor, m: int, ignore: Optional[torch.Tensor] = None) -> list:
    """Move per-crop targets into each of the M views of that crop (theta [B*M, 2, 3]; points
    that leave are dropped, with their weights). ``ignore`` bool [B*M, s, s]: each view's
    ignored area, attached to its targets."""
    res = []
    for i in range(theta.shape[0]):
        t = targets[i // m]
        pts, keep = transform_points(t["points"], theta[i])
        v = {"points": pts[keep], "labels": t["labels"][keep]}
        if t.get("weights") is not None:
            v["weights"] = t["weights"][keep]
        if ignore is not None:
            v["ignore"] = ignore[i]
        res.append(v)
    return res


class Trainer:
    """The AC-Former training loop, shared by training from scratch (:func:`train_job`) and
    fine-tuning from corrections (``finetune.train``); the callers draw the batches and do the
    validation and saving.

    Holds the local network ``model`` (already on its device), the view generator ``views``, the
    criterion, the global network ``ema`` and the optimiser ``opt``; ``n`` = steps done,
    ``seconds`` = wall time spent in :meth:`fit` (both restored on resume). The global loss is on from
    step ``global_warmup`` (default ``cfg.global_warmup``) when ``cfg.global_loss``.
    """

    def __init__(self, model, cfg: ACFormerConfig, seed: int = 0, global_warmup: Optional[int] = None):
        self.model, self.cfg, self.seed = model, cfg, seed
        self.device = next(model.parameters()).device
        self.views = build_view_generator(cfg).to(self.device)
        self.criterion = build_criterion(cfg)
        if cfg.dense_only:
            if model.dense_head is None:
                raise JobError("dense_only needs dense_head")
            tune_bb = cfg.dense_backbone_lr_mult > 0
            for n, p in model.named_parameters():
                p.requires_grad_(n.startswith("dense_head.") or (tune_bb and n.startswith("backbone.")))
            for p in self.views.parameters():
                p.requires_grad_(False)
        self.ema = ModelEMA(model, cfg.ema_momentum)
        self.opt = torch.optim.AdamW([g for g in _param_groups(model, self.views, cfg)
                                      if any(p.requires_grad for p in g["params"])],
                                     lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.global_warmup = cfg.global_warmup if global_warmup is None else int(global_warmup)
        self.n, self.seconds = 0, 0.0

    def step(self, crops: torch.Tensor, targets: list, ignore: Optional[torch.Tensor] = None) -> dict:
        """One step on ``crops`` float32 [B, 3, s, s] in [0, 1] with per-crop ``targets``
        ``{"points": [G, 2] (y, x) normalised to the crop, "labels": [G] (-1 = unknown class),
        "weights": [G] (optional)}`` and ``ignore`` bool [B, s, s] (optional: where unmatched
        proposals get no loss). -> info: ``loss``, ``class``, ``point`` (+ ``global``,
        ``n_teacher`` = mean teacher points per crop, when the global loss is on)."""
        cfg, dev = self.cfg, self.device
        self.model.train(), self.views.train()
        if cfg.dense_only:  # the trained network stays as it is: no BatchNorm updates, no FuseStyle
            self.model.eval(), self.model.dense_head.train()
        crops = crops.to(dev)
        targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.n)
        v, theta = self.views(crops, gen)
        m = self.views.m
        ign_v = None
        if ignore is not None:  # warp the known area like the pixels; < half known -> ignored
            known = (~ignore.to(dev)).float()[:, None].repeat_interleave(m, 0)
            ign_v = warp_images(known, theta.detach(), v.shape[-1])[:, 0] < 0.5
        view_targets = _view_targets(targets, theta, m, ign_v)
        if cfg.dense_only:
            with torch.set_grad_enabled(cfg.dense_backbone_lr_mult > 0):
                feats = self.model.backbone(v.detach(), all_stages=True)
            dl = dense_loss(self.model.dense_head(feats[:3]), view_targets, cfg.dense_sigma, ign_v,
                            cfg.dense_class_weights)
            self._optimizer_step(cfg.dense_weight * dl)
            self.n += 1
            return {"loss": float(dl.detach()), "class": 0.0, "point": 0.0, "dense": float(dl.detach())}
        outputs = self.model(v)
        loss, parts = self.criterion(outputs, view_targets)
        if "dense" in outputs:
            dl = dense_loss(outputs["dense"], view_targets, cfg.dense_sigma, ign_v, cfg.dense_class_weights)
            loss = loss + cfg.dense_weight * dl
            parts["dense"] = float(dl.detach())
        if cfg.global_loss and self.n >= self.global_warmup:
            teacher = _teacher_targets(self.ema.module, crops, cfg.teacher_threshold)
            gl, _ = self.criterion(outputs, _view_targets(teacher, theta, m, ign_v))
            loss = loss + cfg.global_weight * gl
            parts["global"] = float(gl.detach())
            parts["n_teacher"] = sum(len(t["labels"]) for t in teacher) / len(teacher)
        if not torch.isfinite(loss):
            raise JobError(f"training diverged at step {self.n} (loss {float(loss)})")
        self._optimizer_step(loss)
        self.n += 1
        return {"loss": float(loss.detach()), **parts}

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, clip gradients (max norm ``cfg.grad_clip``; 0 = off), step, update the EMA."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], self.cfg.grad_clip)
        self.opt.step()
        self.ema.update(self.model)

    def fit(self, next_batch: Callable, n_steps: int, cancel: Optional[CancelFlag] = None,
            lr_factor: Optional[Callable[[int], float]] = None):
        """Up to ``n_steps`` steps; yields each step's info (see :meth:`step`).

        ``next_batch(i)`` (i = 0, 1, ... within this call) -> ``(crops, targets)`` or
        ``(crops, targets, ignore)``, or None to stop early (e.g. a time budget). ``lr_factor(n)``
        scales every group's ``base_lr`` at step ``n`` (None: constant lr). Checks ``cancel``
        before each step."""
        for i in range(n_steps):
            check_cancel(cancel)
            t0 = time.perf_counter()
            batch = next_batch(i)
            if batch is None:
                return
            if lr_factor is not None:
                f = lr_factor(self.n)
                for g in self.opt.param_groups:
                    g["lr"] = g["base_lr"] * f
            info = self.step(*batch)
            self.seconds += time.perf_counter() - t0
            yield info


def evaluate(detector: ACFormerDetector, items: list[PointImage], thresholds=(0.5,), radius: float = 6.0) -> dict:
    """F_d, per-class F_c and mean F_c on whole images, for each score threshold. Labels -1 count
    for detection only."""
    from ...engine.inference import infer_array
    from ...metrics import pooled_classification_scores

    raw = []
    saved = detector.threshold
    detector.threshold = min(thresholds)
    try:
        for it in items:
            r = infer_array(detector, it.image)
            raw.append((r.points, r.class_ids, r.scores))
    finally:
        detector.threshold = saved
    res = {}
    for thr in thresholds:
        r = pooled_classification_scores(((p[s >= thr], c[s >= thr], it.points, it.labels)
                                          for it, (p, c, s) in zip(items, raw)), len(detector.classes), radius)
        res[f"{thr:g}"] = {k: r[k] for k in ("f_d", "precision", "recall", "f_c", "mean_f_c")}
    return res


def _init_weights(net, init_from: str) -> None:
    """Load the AC-Former model ``init_from`` into ``net``; only ``dense_head.*`` may be missing
    from it (one line otherwise)."""
    from ...models import load_checkpoint

    state, _ = load_checkpoint(init_from, KIND)
    try:
        res = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise JobError(f"cannot start from {init_from}: its weights do not fit this configuration "
                       f"({str(e).splitlines()[-1].strip().rstrip('.')})") from None
    missing = [k for k in res.missing_keys if not k.startswith("dense_head.")]
    if missing or res.unexpected_keys:
        raise JobError(f"cannot start from {init_from}: its weights do not fit this configuration "
                       f"({len(missing)} missing, {len(res.unexpected_keys)} unexpected keys)")


def train_job(cfg: ACFormerConfig, train: list[PointImage], out: str | Path, val: Optional[list[PointImage]] = None,
              device="cpu", seed: int = 0, resume: bool = False, ckpt_every: int = 100, eval_every: int = 250,
              log_path: Optional[str | Path] = None, cancel: Optional[CancelFlag] = None,
              backbone_weights: Optional[str] = None, extra_config: Optional[dict] = None,
              init_from: Optional[str] = None):
    """Train and save an AC-Former model folder at ``out``. Yields ``Progress`` (info: loss
    parts, lr, val metrics); returns the final config dict. ``init_from``: an AC-Former model
    (folder or bundled name) whose weights start the run; parts ``cfg`` adds (a dense head)
    start fresh."""
    from ...engine.devices import seed_everything
    from ...models import save_checkpoint

    cfg.validate()
    if not train:
        raise JobError("no training images")
    out = Path(out)
    sdir = state_dir(out)
    sdir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    seed_everything(seed)
    net = build_model(cfg, backbone_weights)
    if init_from:
        _init_weights(net, init_from)
    tr = Trainer(net.to(device), cfg, seed)
    model, views, ema, opt = tr.model, tr.views, tr.ema, tr.opt
    best, history, changed = -1.0, [], {}
    last = sdir / "last.pt"
    if resume and last.is_file():
        st = torch.load(str(last), map_location="cpu", weights_only=True)
        saved = st.get("architecture", {})
        fixed = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_MAY_CHANGE}
        # a field added since the run was saved counts as its default (what the run trained with)
        defaults = type(cfg)().to_dict()
        differ = sorted(k for k in fixed if saved.get(k, defaults.get(k)) != fixed[k])
        if differ:
            raise JobError(f"cannot resume {out}: the saved run used another configuration ({', '.join(differ)})")
        changed = {k: [saved.get(k), getattr(cfg, k)] for k in RESUME_MAY_CHANGE if saved.get(k) != getattr(cfg, k)}
        model.load_state_dict(st["model"]), ema.module.load_state_dict(st["ema"])
        views.load_state_dict(st["views"]), opt.load_state_dict(st["opt"])
        tr.n, best, tr.seconds, ema.updates = int(st["step"]), float(st["best"]), float(st["time"]), int(st["ema_updates"])
        history = json.loads(st["history"])
        torch.set_rng_state(st["rng"])
    log = open(log_path, "a") if log_path else None
    if resume and changed and log:
        log.write(json.dumps({"step": tr.n, "resumed_with_changes": changed}) + "\n")
    total = cfg.steps
    run_cfg = {"kind": KIND, "name": out.name, "architecture": cfg.to_dict(), "classes": list(cfg.classes),
               "mpp": cfg.mpp, **(extra_config or {})}

    def save_state():
        torch.save({"model": model.state_dict(), "ema": ema.module.state_dict(), "views": views.state_dict(),
                    "opt": opt.state_dict(), "step": tr.n, "best": best, "time": tr.seconds,
                    "ema_updates": ema.updates, "history": json.dumps(history), "rng": torch.get_rng_state(),
                    "architecture": cfg.to_dict()}, str(sdir / "last.tmp"))
        (sdir / "last.tmp").replace(last)

    def save_model(metrics: dict):
        c = dict(run_cfg)
        c["training"] = {**c.get("training", {}), "steps": tr.n, "seed": seed, "train_seconds": round(tr.seconds, 1),
                         "n_train_images": len(train), "device": str(device)}
        if changed:
            c["training"]["changed_on_resume"] = changed
        c["metrics"] = metrics
        save_checkpoint(out, ema.module.state_dict(), c)

    def next_batch(_i):
        """B random crops of random training images, drawn from the step number (resumable)."""
        rng = np.random.default_rng([seed, tr.n])
        crops, targets = [], []
        for _ in range(cfg.batch_images):
            item = train[int(rng.integers(len(train)))]
            c, p, lab = random_crop(item, cfg.crop_size, rng, cfg.color_jitter, cfg.hed_jitter)
            crops.append(torch.from_numpy(c))
            targets.append({"points": torch.from_numpy(p), "labels": torch.from_numpy(lab)})
        return torch.stack(crops), targets

    try:
        for info in tr.fit(next_batch, total - tr.n, cancel, lambda n: _lr_factor(n, cfg, total)):
            step = tr.n
            info.update(lr=opt.param_groups[0]["lr"], sec=round(tr.seconds, 1))
            if log:
                log.write(json.dumps({"step": step, **{k: (round(x, 5) if isinstance(x, float) else x) for k, x in info.items()}}) + "\n")
                log.flush()
            if step % eval_every == 0 or step == total:
                metrics = {}
                if val:
                    det = ACFormerDetector(ema.module, cfg, device=device)
                    metrics = evaluate(det, val, thresholds=(0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5))
                    ema.module.eval()
                    score = max(r["f_d"] + r["mean_f_c"] for r in metrics.values())
                else:
                    score = step
                history.append({"step": step, "val": metrics})
                info["val"] = metrics
                if log:
                    log.write(json.dumps({"step": step, "val": metrics}) + "\n")
                    log.flush()
                if score > best:
                    best = score
                    save_model({"val": metrics, "selected_at_step": step})
                save_state()
            elif step % ckpt_every == 0:
                save_state()
            yield Progress(step, total, f"loss {info['loss']:.3f}", info)
        if not (out / "config.json").is_file():
            save_model({})
    finally:
        if log:
            log.close()
    return run_cfg
