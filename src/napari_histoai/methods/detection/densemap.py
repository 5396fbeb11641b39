"""The plain dense-map peer of AC-Former: a small U-Net regressing a Gaussian centre map (all
nuclei) plus per-pixel class logits, peaks as detections (CenterNet-style; the family of
SC-CNN / "dense map" detectors AC-Former's paper compares with).

Shapes: input RGB [B, 3, H, W] in [0, 1] (H, W multiples of 8); output [B, 1 + K, H, W]:
channel 0 the centre-map logit (target: max over nuclei of exp(-d² / 2σ²), σ in model px),
channels 1..K class logits (trained on the pixels within ``class_radius`` px of a nucleus of
known class). Detections: local maxima of sigmoid(channel 0) >= threshold within a
(2 ``peak_radius`` + 1)² window; the class is the argmax of channels 1..K at the peak.

Saved as safetensors + JSON (kind ``densemap-detector``); :class:`DenseMapDetector` is a point
detector of the engine's protocol.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ...engine.jobs import Progress
from ...errors import CancelFlag, JobError, check_cancel
from ..config_fields import from_json, to_json
from ..train_state import load_state, save_state, stage_dir

__all__ = ["KIND", "DenseMapConfig", "DenseMapUNet", "DenseMapDetector", "centre_targets", "focal_heatmap_loss",
           "train_densemap_job", "save_densemap", "load_densemap", "find_peaks"]

KIND = "densemap-detector"


@dataclass
class DenseMapConfig:
    classes: list = field(default_factory=lambda: ["epithelial", "inflammatory", "fibroblast", "others"])
    mpp: float = 0.5
    widths: tuple = (16, 32, 64, 128)   # encoder channels per level (3 poolings)
    sigma: float = 2.0                  # centre Gaussian, model px
    class_radius: float = 3.0           # px around a centre whose pixels carry its class
    peak_radius: int = 2                # local-maximum window half-size, px
    min_distance: float = 3.0           # merge peaks closer than this, px
    threshold: float = 0.3
    crop: int = 128
    batch: int = 8
    steps: int = 4000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    class_weight: float = 1.0
    jitter: float = 0.1
    tile_size: int = 512
    overlap: int = 32
    seed: int = 0
    stain_target: list = None           # [[mean OD R, G, B], [std OD R, G, B]] of the training images:
    #                                     images are matched to it at inference (as AC-Former's)
    stain_spread: list = None           # spread of the training stains [2, 3] and the radius within which
    stain_radius: float = None          # an input is left unmatched (methods/stain.py); None = match all

    def to_dict(self) -> dict:
        return to_json(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DenseMapConfig":
        return from_json(cls, d)


def DenseMapUNet(widths: Sequence[int], n_classes: int):
    """U-Net [B, 3, H, W] -> [B, 1 + n_classes, H, W] (H, W multiples of 2^(len(widths)-1)); the
    centre-map bias starts at -4 (a near-empty map)."""
    import torch.nn as nn

    from ..unet import UNet

    net = UNet(widths, 1 + n_classes)
    nn.init.constant_(net.head.bias[:1], -4.0)
    return net


def centre_targets(points: np.ndarray, labels: np.ndarray, size: int, sigma: float, class_radius: float):
    """Targets of one crop: points [G, 2] (y, x) px, labels [G] (-1 = unknown class) ->
    (heat float32 [size, size] in [0, 1], cls int64 [size, size] with -1 = ignore)."""
    heat = np.zeros((size, size), np.float32)
    cls = np.full((size, size), -1, np.int64)
    r = int(math.ceil(3 * sigma))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    for (y, x), lab in zip(points, labels):
        cy, cx = int(round(float(y))), int(round(float(x)))
        g = np.exp(-((yy + cy - y) ** 2 + (xx + cx - x) ** 2) / (2 * sigma ** 2)).astype(np.float32)
        y0, y1, x0, x1 = cy - r, cy + r + 1, cx - r, cx + r + 1
        gy0, gx0 = max(0, -y0), max(0, -x0)
        y0c, x0c, y1c, x1c = max(0, y0), max(0, x0), min(size, y1), min(size, x1)
        if y1c <= y0c or x1c <= x0c:
            continue
        sub = g[gy0:gy0 + y1c - y0c, gx0:gx0 + x1c - x0c]
        np.maximum(heat[y0c:y1c, x0c:x1c], sub, out=heat[y0c:y1c, x0c:x1c])
        if lab >= 0:
            near = ((yy + cy - y) ** 2 + (xx + cx - x) ** 2 <= class_radius ** 2)[gy0:gy0 + y1c - y0c, gx0:gx0 + x1c - x0c]
            cls[y0c:y1c, x0c:x1c][near] = lab
    return heat, cls


def focal_heatmap_loss(logit, heat, alpha: float = 2.0, beta: float = 4.0):
    """CenterNet's penalty-reduced focal loss: logit / heat [B, 1, H, W]; normalised by the
    number of centres (pixels where heat == 1, at least 1)."""
    import torch.nn.functional as F

    p = logit.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = heat >= 0.999
    pos_loss = -F.logsigmoid(logit) * (1 - p) ** alpha
    neg_loss = -F.logsigmoid(-logit) * p ** alpha * (1 - heat) ** beta
    n = pos.sum().clamp(min=1)
    return (pos_loss[pos].sum() + neg_loss[~pos].sum()) / n


def find_peaks(heat: np.ndarray, threshold: float, radius: int) -> np.ndarray:
    """Local maxima of ``heat`` [H, W] >= threshold within (2 radius + 1)² -> [N, 2] (y, x) int."""
    from scipy.ndimage import maximum_filter

    m = maximum_filter(heat, size=2 * radius + 1, mode="constant", cval=0.0)
    return np.argwhere((heat >= threshold) & (heat >= m))


class DenseMapDetector:
    """PointDetector (engine protocol) around a trained :func:`DenseMapUNet`."""

    windowed = False

    def __init__(self, net, config: DenseMapConfig, name: str = "densemap", device="cpu"):
        import torch

        self.net = net.to(device).eval()
        self.config = config
        self.name = name
        self.classes = list(config.classes)
        self.mpp = float(config.mpp)
        self.tile_size = int(config.tile_size)
        self.overlap = int(config.overlap)
        self.threshold = float(config.threshold)
        self.min_distance = float(config.min_distance)
        self.merge_radius = float(config.min_distance)
        self.device = torch.device(device)
        self.batch_size = 4
        target = config.stain_target
        self.stain_target = None if target is None else np.asarray(target, np.float64)
        self.stain_lut = None

    def prepare(self, thumbnail: np.ndarray, tissue: np.ndarray) -> None:
        """Engine hook, once per image or slide: match its stain (OD statistics of the tissue in
        its thumbnail) to the training images' (no-op without a stain target)."""
        from ..stain import matching_lut, od_stats

        self.stain_lut = None
        if self.stain_target is not None:
            c = self.config
            self.stain_lut = matching_lut(od_stats(thumbnail, tissue), self.stain_target,
                                          c.stain_spread, c.stain_radius)

    def maps(self, tiles: Sequence[np.ndarray]) -> list:
        """RGB uint8 tiles -> per tile (centre probability [h, w], class probabilities [K, h, w])."""
        import torch

        from .predict import _to_batch

        from ..stain import apply_lut

        out = []
        for i in range(0, len(tiles), self.batch_size):
            chunk = tiles[i:i + self.batch_size]
            if self.stain_lut is not None:
                chunk = [apply_lut(np.asarray(t), self.stain_lut) for t in chunk]
            x, sizes = _to_batch(chunk, 8, self.device)
            with torch.inference_mode():
                y = self.net(x).float()
            heat = y[:, 0].sigmoid().cpu().numpy()
            prob = y[:, 1:].softmax(1).cpu().numpy()
            out += [(heat[j, :h, :w], prob[j, :, :h, :w]) for j, (h, w) in enumerate(sizes)]
        return out

    def predict_tiles(self, tiles: Sequence[np.ndarray]) -> list:
        from .predict import merge_close_points

        out = []
        for heat, prob in self.maps(tiles):
            yx = find_peaks(heat, self.threshold, self.config.peak_radius)
            score = heat[yx[:, 0], yx[:, 1]].astype(np.float32)
            cls = prob[:, yx[:, 0], yx[:, 1]].argmax(0).astype(np.int64)
            pts, cls, score = merge_close_points(yx.astype(np.float32), cls, score, self.min_distance)
            out.append((pts.astype(np.float32), cls, score.astype(np.float32)))
        return out


CHECKPOINT_EVERY = 250
# settings that change inference only: left out of the resume key, so setting them never restarts training
INFERENCE_ONLY = ("threshold", "stain_target", "stain_spread", "stain_radius", "peak_radius", "min_distance", "tile_size", "overlap")


def train_densemap_job(items, config: DenseMapConfig, *, device="cpu", cancel: Optional[CancelFlag] = None,
                       log_every: int = 50, checkpoint_dir=None):
    """Train a dense-map U-Net on ``items`` (detection.data.PointImage at ``config.mpp``): AdamW,
    one-cycle learning rate, random crops with flips / turns / colour jitter. A job: yields
    Progress with info {"loss", "heat", "class", "seconds" (of training, across resumed runs)};
    returns the network (eval mode). With
    ``checkpoint_dir`` the state is saved every ``CHECKPOINT_EVERY`` steps and a rerun with the
    same config and data resumes there."""
    import torch
    import torch.nn.functional as F

    from ...engine.devices import seed_everything
    from .data import random_crop

    if not items:
        raise JobError("no training images")
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    dev = torch.device(device)
    net = DenseMapUNet(config.widths, len(config.classes)).to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    weights = np.array([max(1, len(it.points)) for it in items], np.float64)
    weights /= weights.sum()
    key = {k: v for k, v in config.to_dict().items() if k not in INFERENCE_ONLY}
    folder = stage_dir(checkpoint_dir, "densemap", key | {"data": sorted(it.name for it in items)})
    meta = load_state(folder, {"net": net}, {"adamw": opt}, rng)
    start = int(meta["step"]) if meta else 0
    before = float(meta.get("seconds", 0.0)) if meta else 0.0    # training time of earlier runs (resumed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # replaying the schedule, not stepping before the optimiser
        for _ in range(start):
            sched.step()
    t0 = time.perf_counter()
    run = {"loss": 0.0, "heat": 0.0, "class": 0.0}
    for step in range(start, config.steps):
        check_cancel(cancel)
        xs, hs, cs = [], [], []
        for _ in range(config.batch):
            it = items[int(rng.choice(len(items), p=weights))]
            crop, norm, lab = random_crop(it, config.crop, rng, config.jitter)
            heat, cls = centre_targets(norm * config.crop - 0.5, lab, config.crop, config.sigma, config.class_radius)
            xs.append(crop)
            hs.append(heat)
            cs.append(cls)
        x = torch.from_numpy(np.stack(xs)).to(dev)
        heat = torch.from_numpy(np.stack(hs))[:, None].to(dev)
        cls = torch.from_numpy(np.stack(cs)).to(dev)
        y = net(x)
        l_heat = focal_heatmap_loss(y[:, :1], heat)
        l_cls = F.cross_entropy(y[:, 1:], cls, ignore_index=-1) if bool((cls >= 0).any()) else y.sum() * 0
        loss = l_heat + config.class_weight * l_cls
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        for k, v in (("loss", loss), ("heat", l_heat), ("class", l_cls)):
            run[k] = 0.98 * run[k] + 0.02 * float(v.detach()) if step > start else float(v.detach())
        if (step + 1) % CHECKPOINT_EVERY == 0:
            save_state(folder, {"net": net}, {"adamw": opt},
                       {"step": step + 1, "seconds": before + time.perf_counter() - t0}, rng)
        if step % log_every == 0 or step == config.steps - 1:
            yield Progress(step + 1, config.steps, f"dense-map step {step + 1}/{config.steps}",
                           {**run, "seconds": before + time.perf_counter() - t0})
    return net.eval()


def save_densemap(net, config: DenseMapConfig, folder: str | os.PathLike, *, training: Optional[dict] = None):
    """Atomic safetensors + JSON (see models.save_checkpoint)."""
    from ...models import save_checkpoint

    return save_checkpoint(folder, {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                           {"kind": KIND, "architecture": config.to_dict(), "mpp": config.mpp,
                            "classes": list(config.classes), "training": training or {}})


def load_densemap(name_or_path: str | os.PathLike, device="cpu") -> DenseMapDetector:
    """A :class:`DenseMapDetector`; one-line errors for other kinds and weights that do not fit."""
    from pathlib import Path

    from ...models import load_checkpoint, load_state_strict

    state, cfg = load_checkpoint(name_or_path, KIND)
    try:
        config = DenseMapConfig.from_dict(cfg["architecture"])
        net = DenseMapUNet(config.widths, len(config.classes))
    except (KeyError, TypeError, ValueError) as e:
        raise JobError(f"model {name_or_path} has an unreadable architecture ({e})") from None
    load_state_strict(net, state, f"dense-map model {Path(str(name_or_path)).name}")
    return DenseMapDetector(net, config, name=Path(str(name_or_path)).name, device=device)
