"""The CyC-PDAM trainer, a job (yields Progress; returns :class:`AdaptTrainResult`):

1. ``cyclegan``: sources rescaled to the model's nucleus size, inverted; CycleGAN learns
   inverted fluorescence -> H&E against target crops (skipped when ``config.cyclegan`` is off:
   the Mask R-CNN then sees inverted grey fluorescence).
2. ``synthesis``: every source image translated whole, then nuclei inpainting (``inpaint``).
   One Progress carries ``info["preview"]`` = {source, synthesised, inpainted} (up to 4 each).
3. ``maskrcnn``: the domain-adaptive Mask R-CNN, one source + one target crop a step, SGD
   (momentum 0.9, weight decay 1e-3), linear warm-up, learning rate x 0.1 at 3/4 of the steps.
4. ``calibrate`` (``config.auto_threshold``): the score threshold chosen on the unlabelled
   targets (``calibrate.py``).

Progress ``info``: {"stage", "losses": {name: float}}. With ``checkpoint_dir`` each stage saves
its state every ``CHECKPOINT_EVERY`` steps and a rerun with the same config and data resumes;
the finished CycleGAN is reused by any run with the same GAN settings and data (the ablation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from ...engine.jobs import Progress
from ...errors import CancelFlag, check_cancel
from ..train_state import load_state, save_state, stage_dir
from .config import AdaptConfig
from .data import SourcePool, TargetPool, instance_targets, inverted_rgb, random_crop
from .sources import SourceImage, TargetImage, check_training_set, rescale_source, resample_target

__all__ = ["AdaptTrainResult", "train_adapt_job", "CHECKPOINT_EVERY"]

CHECKPOINT_EVERY = 200
_GAN_KEYS = ("mpp", "nucleus_um", "scale_jitter", "gan_steps", "gan_crop", "gan_width", "gan_blocks", "gan_lr",
             "cycle_weight", "gan_identity", "gan_structure", "seed")


@dataclass
class AdaptTrainResult:
    net: object                      # PDAMNet (eval mode, on the training device)
    config: AdaptConfig
    seconds: float = 0.0
    history: list = field(default_factory=list)   # {stage, step, **losses} every few steps
    notes: list = field(default_factory=list)
    preview: dict = field(default_factory=dict)    # {source, synthesised, inpainted}: lists of uint8 images


def _lr(cfg: AdaptConfig, step: int) -> float:
    lr = cfg.lr * (0.1 if step >= 0.75 * cfg.steps else 1.0)
    if step < cfg.warmup:
        lr *= (1 / 3) + (2 / 3) * step / max(1, cfg.warmup)
    return lr


def _data_key(sources, targets) -> list:
    return [[s.name for s in sources], [(t.name, t.rgb.shape) for t in targets]]


def _train_cyclegan(src_rgb, src_masks, tgt_rgb, cfg: AdaptConfig, dev, rng, folder, cancel):
    import torch

    from .cyclegan import CycleGAN, _Pool, to_gan

    gan = CycleGAN(cfg.gan_width, cfg.gan_blocks).to(dev).train()
    opt_g, opt_d = gan.optimisers(cfg.gan_lr)
    meta = load_state(folder, {"gan": gan}, {"g": opt_g, "d": opt_d}, rng)
    start = int(meta["step"]) if meta else 0
    pools = (_Pool(50, rng), _Pool(50, rng))
    s_pool = SourcePool(src_rgb, src_masks, rng)     # source crops with >= 3 nuclei, as the paper's patches
    t_pool = TargetPool(tgt_rgb, rng)
    history = []
    for step in range(start, cfg.gan_steps):
        check_cancel(cancel)
        frac = step / max(1, cfg.gan_steps)
        lr = cfg.gan_lr * (1.0 if frac < 0.5 else max(0.0, 2 * (1 - frac)))
        for opt in (opt_g, opt_d):
            for g in opt.param_groups:
                g["lr"] = lr
        s = to_gan(s_pool.sample(cfg.gan_crop)[0]).to(dev)
        t = to_gan(t_pool.sample(cfg.gan_crop)).to(dev)
        losses = gan.step(s, t, opt_g, opt_d, pools, cfg.cycle_weight, cfg.gan_identity, cfg.gan_structure)
        if step % 10 == 0 or step == cfg.gan_steps - 1:
            history.append({"stage": "cyclegan", "step": step, **losses})
        if (step + 1) % CHECKPOINT_EVERY == 0:
            save_state(folder, {"gan": gan}, {"g": opt_g, "d": opt_d}, {"step": step + 1}, rng)
        yield Progress(step + 1, cfg.gan_steps, f"CycleGAN step {step + 1}/{cfg.gan_steps}",
                       {"stage": "cyclegan", "losses": losses})
    if start < cfg.gan_steps:
        save_state(folder, {"gan": gan}, {"g": opt_g, "d": opt_d}, {"step": cfg.gan_steps}, rng)
    torch.set_grad_enabled(True)
    return gan.s2t.eval(), history


def _train_pdam(images, masks, tgt_rgb, cfg: AdaptConfig, dev, rng, folder, cancel):
    import torch

    from .grl import alpha_schedule
    from .network import build, normalise
    from .objective import step_losses

    net = build(cfg.arch).to(dev).train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    meta = load_state(folder, {"net": net}, {"sgd": opt}, rng)
    start = int(meta["step"]) if meta else 0
    s_pool, t_pool = SourcePool(images, masks, rng, cfg.stain_aug, tuple(cfg.zoom_aug)), TargetPool(tgt_rgb, rng)
    use_t = cfg.img_da or cfg.ins_da or cfg.sem
    history = []

    def tensor(rgb):
        return normalise(torch.from_numpy(rgb).permute(2, 0, 1)[None]).to(dev)

    for step in range(start, cfg.steps):
        check_cancel(cancel)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        img, m = s_pool.sample(cfg.crop)
        target = {k: v.to(dev) for k, v in instance_targets(m).items()}
        if len(target["boxes"]) == 0:
            continue
        fg = torch.from_numpy((m > 0).astype(np.int64))[None].to(dev)
        x_t = tensor(t_pool.sample(cfg.crop)) if use_t else None
        total, parts = step_losses(net, tensor(img), target, fg, x_t, cfg, alpha_schedule(step / max(1, cfg.steps)))
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        if step % 10 == 0 or step == cfg.steps - 1:
            history.append({"stage": "maskrcnn", "step": step, "total": float(total.detach()), **parts})
        if (step + 1) % CHECKPOINT_EVERY == 0:
            save_state(folder, {"net": net}, {"sgd": opt}, {"step": step + 1}, rng)
        yield Progress(step + 1, cfg.steps, f"Mask R-CNN step {step + 1}/{cfg.steps}",
                       {"stage": "maskrcnn", "losses": parts})
    return net.eval(), history


def train_adapt_job(sources: Sequence[SourceImage], targets: Sequence[TargetImage], config: AdaptConfig, *,
                    device="auto", checkpoint_dir=None, cancel: Optional[CancelFlag] = None):
    """Train CyC-PDAM from labelled ``sources`` to unlabelled ``targets`` (see module doc)."""
    import torch

    from ...engine.devices import pick_device, seed_everything
    from .calibrate import calibrate_threshold
    from .cyclegan import translate
    from .inpaint import inpaint_nuclei
    from .network import set_test_proposals

    cfg = config.validate()
    check_training_set(sources, targets)
    dev = pick_device(device) if isinstance(device, str) else device
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    notes = []
    d = cfg.nucleus_um / cfg.mpp
    src = [rescale_source(s, d * (1 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter))) for s in sources]
    unknown = [t.name for t in targets if not t.mpp]
    if unknown:
        notes.append(f"{len(unknown)} target image(s) without a pixel size were taken to be at {cfg.mpp} µm/px "
                     f"(e.g. {unknown[0]})")
    tgt = [resample_target(t, cfg.mpp) for t in targets]
    tgt = [t if min(t.shape[:2]) >= cfg.gan_crop else random_crop([t], cfg.gan_crop, rng, fill=[255])[0] for t in tgt]
    src_inv = [inverted_rgb(s.image) for s in src]
    history: list = []
    key = {k: getattr(cfg, k) for k in _GAN_KEYS} | {"data": _data_key(sources, targets)}
    if cfg.cyclegan:
        g, h = yield from _train_cyclegan(src_inv, [s.mask for s in src], tgt, cfg, dev, rng, stage_dir(checkpoint_dir, "cyclegan", key),
                                          cancel)
        history += h
        synth = []
        for i, im in enumerate(src_inv):
            check_cancel(cancel)
            synth.append(translate(g, im, device=dev))
            yield Progress(i + 1, len(src_inv), f"synthesising H&E {i + 1}/{len(src_inv)}", {"stage": "synthesis"})
        del g
    else:
        synth = src_inv
    final = [inpaint_nuclei(im, s.mask) for im, s in zip(synth, src)] if (cfg.inpaint and cfg.cyclegan) else synth
    preview = {"source": [s.image for s in src[:4]], "synthesised": synth[:4], "inpainted": final[:4]}
    yield Progress(len(src), len(src), "synthesised H&E ready", {"stage": "synthesis", "preview": preview})
    pkey = cfg.training_key() | {"data": _data_key(sources, targets)}
    net, h = yield from _train_pdam(final, [s.mask for s in src], tgt, cfg, dev, rng,
                                    stage_dir(checkpoint_dir, "pdam", pkey), cancel)
    history += h
    set_test_proposals(net.detector, cfg.rpn_test_pre, cfg.rpn_test_post)
    if cfg.auto_threshold:
        check_cancel(cancel)
        yield Progress(0, 1, "choosing the score threshold on the target images", {"stage": "calibrate"})
        thr, info = calibrate_threshold(net.detector, tgt, tile=cfg.tile_size, mask_threshold=cfg.mask_threshold,
                                        min_area=cfg.min_area, rng=rng)
        cfg = replace(cfg, score_threshold=thr)
        notes.append(f"score threshold {thr:g}: predicted nuclear area {info['fractions'][str(thr)]:.3f} of the "
                     f"target images vs {info['otsu_fraction']:.3f} by Otsu on hematoxylin")
        yield Progress(1, 1, f"score threshold {thr:g}", {"stage": "calibrate", "calibration": info})
    torch.set_grad_enabled(True)
    return AdaptTrainResult(net, cfg, time.perf_counter() - t0, history, notes, preview)
