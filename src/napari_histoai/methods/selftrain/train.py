"""Training on the image itself: random crops of the pseudo-labelled images, rotations / flips
and colour jitter, masked BCE on nuclei + MSE on the normalised distance map, Adam with a
cosine decay. A job: yields Progress (info {"loss", "fg", "dist"}); returns the network."""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from ...engine.jobs import Progress
from ...errors import CancelFlag, JobError, check_cancel
from .config import SelfTrainConfig
from .pseudo import pseudo_labels

__all__ = ["train_selftrain_job", "crop_batch"]


def _pad(a: np.ndarray, size: int, value=0) -> np.ndarray:
    ph, pw = max(0, size - a.shape[0]), max(0, size - a.shape[1])
    if not (ph or pw):
        return a
    return np.pad(a, ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2), constant_values=value)


def crop_batch(data: list, cfg: SelfTrainConfig, rng: np.random.Generator):
    """A batch of augmented crops: (x [B, 3, S, S] float32 in [0, 1], fg, weight, dist [B, 1, S, S])."""
    s = cfg.crop
    area = np.array([d[0].shape[0] * d[0].shape[1] for d in data], np.float64)
    out = [[], [], [], []]
    for _ in range(cfg.batch):
        rgb, p = data[int(rng.choice(len(data), p=area / area.sum()))]
        arrs = [_pad(rgb, s, 255), _pad(p.fg, s), _pad(p.weight, s), _pad(p.dist, s)]
        h, w = arrs[0].shape[:2]
        y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        arrs = [a[y0:y0 + s, x0:x0 + s] for a in arrs]
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        arrs = [np.rot90(a, k, axes=(0, 1)) for a in arrs]
        if flip:
            arrs = [a[:, ::-1] for a in arrs]
        im = arrs[0].astype(np.float32) / 255.0
        j = cfg.jitter
        im = im * (1 + rng.uniform(-j, j, 3)).astype(np.float32) + np.float32(rng.uniform(-j / 2, j / 2))
        out[0].append(np.clip(im, 0, 1).transpose(2, 0, 1))
        for i in (1, 2, 3):
            out[i].append(arrs[i][None])
    return tuple(np.ascontiguousarray(np.stack(o), dtype=np.float32) for o in out)


def train_selftrain_job(images: Sequence[np.ndarray], config: Optional[SelfTrainConfig] = None, *, device="cpu",
                        cancel: Optional[CancelFlag] = None):
    """Train on RGB uint8 ``images`` [H, W, 3] at ``config.mpp`` µm/px (no labels)."""
    import torch
    import torch.nn.functional as F

    from ...engine.devices import seed_everything
    from ..unet import UNet

    cfg = (config or SelfTrainConfig()).validate()
    if not images:
        raise JobError("no image to train on")
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    yield Progress(0, cfg.steps, "hematoxylin prior")
    data = [(np.ascontiguousarray(im[..., :3]), pseudo_labels(im[..., :3], cfg)) for im in images]
    if not any(p.fg.any() for _, p in data):
        raise JobError("no nuclei-like (hematoxylin-stained) pixels in the image to learn from")
    dev = torch.device(device)
    net = UNet(cfg.widths).to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    run = {}
    for step in range(cfg.steps):
        check_cancel(cancel)
        x, fg, w, dist = (torch.from_numpy(a).to(dev) for a in crop_batch(data, cfg, rng))
        y = net(x)
        n = w.sum().clamp(min=1)
        l_fg = (F.binary_cross_entropy_with_logits(y[:, :1], fg, reduction="none") * w).sum() / n
        l_d = (((y[:, 1:].sigmoid() - dist) ** 2) * w).sum() / n
        loss = l_fg + cfg.dist_weight * l_d
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        for k, v in (("loss", loss), ("fg", l_fg), ("dist", l_d)):
            run[k] = 0.9 * run[k] + 0.1 * float(v.detach()) if k in run else float(v.detach())
        if step % 10 == 0 or step == cfg.steps - 1:
            yield Progress(step + 1, cfg.steps, f"training step {step + 1}/{cfg.steps}",
                           {**run, "seconds": time.perf_counter() - t0})
    return net.eval()
