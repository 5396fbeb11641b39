"""Training the confidence network on the images the user looks at (one image, a region, or
tiles of a slide), with restarts and model selection.

``train_job(images, config)`` is a job (see ``engine.jobs``): it yields ``Progress`` after every
step (with ``info["confidence"]`` = the current maps of the preview image at every evaluation)
and returns a :class:`TrainResult`.

Selection: every ``eval_every`` steps the maps of a few fixed evaluation crops are scored;
the best snapshot of every restart and the best restart overall are kept. Without ground truth
the score is unsupervised: the best agreement (Dice) of a thresholded channel with the Otsu mask
of the hematoxylin optical density (nuclei are the hematoxylin-stained objects). With ground truth masks the score
is the Dice of the best channel at the threshold (the paper's selection).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from ...engine.jobs import Progress
from ...errors import JobError
from .loss import contrastive_loss
from .network import build
from .predict import to_input
from .sampler import cut_patches, sample_patches
from .similarity import SIMILARITIES

KIND = "contrastive-segmenter"


@dataclass
class ContrastiveConfig:
    n_channels: int = 4           # K confidence maps
    width: int = 8                # channels inside the network
    patch_size: int = 50          # px (at the working resolution)
    stride: int = 20              # candidate grid stride, px
    patches_per_image: int = 10   # per channel and crop
    similarity: str = "mse"       # mse | ce | cosine
    sampling: str = "entropy"     # entropy | uniform (ablation)
    inter: bool = True            # inter-channel loss on/off (ablation)
    steps: int = 60               # optimiser steps per restart
    restarts: int = 2
    batch_size: int = 3           # crops per step
    crop_min: int = 250
    crop_max: int = 300
    lr: float = 2e-4
    weight_decay: float = 1e-4
    eval_every: int = 15
    eval_crop: int = 400          # side of the fixed evaluation crops (px, working resolution)
    n_eval_crops: int = 3
    downsample: float = 1.0       # working resolution = input / downsample
    threshold: float | str = "auto"  # Otsu of the nuclei map; or a number (the paper: 0.5)
    seed: int = 0

    def validate(self) -> "ContrastiveConfig":
        """Returns self; one-line JobError naming the first bad field: a value of the wrong type
        (from the annotation), sizes, counts, lr and downsample not positive, weight decay or seed
        negative, an unknown similarity or sampling, a threshold neither "auto" nor in (0, 1), or
        not 8 <= patch_size <= crop_min <= crop_max."""
        from ..config_fields import NON_NEGATIVE, POSITIVE, check_fields, one_of

        rules = {**{k: POSITIVE for k in ("n_channels", "width", "patch_size", "stride", "patches_per_image", "steps",
                                         "restarts", "batch_size", "crop_min", "crop_max", "lr", "eval_every",
                                         "eval_crop", "n_eval_crops", "downsample")},
                 "weight_decay": NON_NEGATIVE, "seed": NON_NEGATIVE,
                 "similarity": one_of(SIMILARITIES), "sampling": one_of(("entropy", "uniform")),
                 "threshold": (lambda v: v == "auto" or (not isinstance(v, str) and 0 < v < 1),
                               "'auto' or a number in (0, 1)")}
        check_fields(self, rules, "segmenter config")
        if self.patch_size < 8 or self.crop_min < self.patch_size or self.crop_max < self.crop_min:
            raise JobError(f"segmenter config: need 8 <= patch_size ({self.patch_size}) <= crop_min "
                           f"({self.crop_min}) <= crop_max ({self.crop_max})")
        return self

    def architecture(self) -> dict:
        return {"n_channels": self.n_channels, "width": self.width}


@dataclass
class TrainResult:
    net: torch.nn.Module             # the selected confidence network (eval mode, CPU or device)
    featuriser: torch.nn.Module
    config: ContrastiveConfig
    score: float                     # selection score of the kept model
    channel: int                     # suggested nuclei channel (from the evaluation crops)
    restart: int                     # which restart won
    step: int                        # at which step
    history: list = field(default_factory=list)   # per restart: [(step, loss, score)]
    restart_scores: list = field(default_factory=list)
    seconds: float = 0.0
    selected_by: str = "hematoxylin"
    preview_box: Optional[tuple] = None      # set by job.train_segmenter_job
    preview_maps: Optional[np.ndarray] = None

    def checkpoint(self) -> tuple[dict, dict]:
        """(state_dict, JSON config) for ``models.save_checkpoint``."""
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self.config.similarity == "cosine":
            state.update({f"featuriser.{k}": v for k, v in self.featuriser.state_dict().items()})
        cfg = {
            "kind": KIND,
            "architecture": self.config.architecture(),
            "training": asdict(self.config),
            "nuclei_channel": int(self.channel),
            "threshold": self.config.threshold if isinstance(self.config.threshold, str) else float(self.config.threshold),
            "downsample": float(self.config.downsample),
            "metrics": {"selection_score": float(self.score), "selected_by": self.selected_by,
                        "restart_scores": [float(s) for s in self.restart_scores],
                        "train_seconds": float(self.seconds)},
        }
        return state, cfg


def _working(im: np.ndarray, downsample: float) -> np.ndarray:
    """An image [H, W(, C)] at the working resolution (1 / ``downsample``)."""
    from ...engine.resize import resize, scaled_shape

    return resize(im, scaled_shape(im.shape, 1.0 / downsample)) if downsample != 1 else im


def _as_images(images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    out = []
    for im in images:
        a = np.asarray(im)
        if a.ndim != 3 or a.shape[2] < 3:
            raise JobError(f"expected RGB images [H, W, 3], got shape {a.shape}")
        if a.dtype != np.uint8:
            if np.issubdtype(a.dtype, np.floating) and a.max() <= 1.0:
                a = (a * 255).round()
            a = np.clip(a, 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(a[..., :3]))
    if not out:
        raise JobError("no image to train on")
    return out


def _eval_crops(images: list[np.ndarray], masks, size: int, n: int):
    """Fixed, spread-out evaluation crops (the same for every restart)."""
    crops = []
    per = max(1, int(np.ceil(n / len(images))))
    for i, im in enumerate(images):
        H, W = im.shape[:2]
        s_y, s_x = min(size, H), min(size, W)
        ys = np.linspace(0, H - s_y, per + 2)[1:-1].astype(int) if per > 1 else [(H - s_y) // 2]
        xs = np.linspace(0, W - s_x, per + 2)[1:-1].astype(int) if per > 1 else [(W - s_x) // 2]
        for y, x in zip(ys, xs[::-1] if per > 1 else xs):
            m = None if masks is None else masks[i][y:y + s_y, x:x + s_x] > 0
            crops.append((im[y:y + s_y, x:x + s_x], m))
            if len(crops) >= n:
                return crops
    return crops


@torch.no_grad()
def _score(net, crops, hem, threshold: float, device) -> tuple[float, int, list]:
    """(score, best channel, maps of the first crop [K, h, w]) on the evaluation crops."""
    net.eval()
    maps = [net(to_input(c, device))[0].float().cpu().numpy() for c, _ in crops]
    net.train()
    K = maps[0].shape[0]
    if crops[0][1] is not None:  # Dice against ground truth
        from .postprocess import resolve_threshold

        per_k = []
        for k in range(K):
            masks = [m[k] > resolve_threshold(m[k], threshold) for m in maps]
            inter = sum(float((p & g).sum()) for p, (_, g) in zip(masks, crops))
            tot = sum(float(p.sum() + g.sum()) for p, (_, g) in zip(masks, crops))
            per_k.append(2 * inter / tot if tot else 0.0)
    else:
        from .postprocess import channel_agreement

        per_k = np.mean([channel_agreement(m, c, threshold) for m, (c, _) in zip(maps, crops)], axis=0).tolist()
    k = int(np.argmax(per_k))
    return per_k[k], k, maps[0]


def train_job(images, config: Optional[ContrastiveConfig] = None, masks: Optional[Sequence] = None,
              device=None, preview: Optional[np.ndarray] = None):
    """Job: train the contrastive segmenter on ``images`` (one RGB uint8 array or a list).

    ``masks`` (optional, same shapes, nonzero = nuclei) switch model selection to Dice.
    Yields ``Progress(done, total, message, info)`` after every step; ``info`` holds ``loss``,
    ``restart`` and, at evaluations, ``score`` and ``confidence`` [K, h, w]: the current maps of
    ``preview`` (an RGB image at input resolution, e.g. what the user looks at; default the
    first evaluation crop at working resolution). Returns a :class:`TrainResult`.
    """
    cfg = (config or ContrastiveConfig()).validate()
    device = torch.device(device) if device is not None else torch.device("cpu")
    imgs = [_working(im, cfg.downsample) for im in _as_images(images)]
    if masks is not None:
        if len(masks) != len(imgs):
            raise JobError("give one ground-truth mask per training image")
        masks = [_working((np.asarray(m) > 0).astype(np.uint8) * 255, cfg.downsample) > 127 for m in masks]
    min_side = min(min(im.shape[:2]) for im in imgs)
    if min_side < cfg.patch_size:
        raise JobError(f"image side {min_side} px is smaller than the patch size {cfg.patch_size} px")
    crop_lo, crop_hi = min(cfg.crop_min, min_side), min(cfg.crop_max, min_side)
    areas = np.array([im.shape[0] * im.shape[1] for im in imgs], float)
    eval_crops = _eval_crops(imgs, masks, cfg.eval_crop, cfg.n_eval_crops)
    hem = None
    total = cfg.steps * cfg.restarts
    t0 = time.time()

    best = None  # (score, restart, step, channel, net state, featuriser state)
    history, restart_scores = [], []
    net = feat = None
    for r in range(cfg.restarts):
        seed = int(cfg.seed) * 1000 + r
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        net, feat = build(cfg.architecture())
        net.to(device).train()
        feat.to(device).train()
        net = net.to(memory_format=torch.channels_last)
        params = list(net.parameters()) + (list(feat.parameters()) if cfg.similarity == "cosine" else [])
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        r_best = None
        hist = []
        for step in range(1, cfg.steps + 1):
            s = int(rng.integers(crop_lo, crop_hi + 1))
            batch = []
            for _ in range(cfg.batch_size):
                im = imgs[int(rng.choice(len(imgs), p=areas / areas.sum()))]
                H, W = im.shape[:2]
                sy, sx = min(s, H), min(s, W)
                y, x = int(rng.integers(0, H - sy + 1)), int(rng.integers(0, W - sx + 1))
                batch.append(im[y:y + s, x:x + s] if (sy, sx) == (s, s) else
                             np.pad(im[y:y + sy, x:x + sx], ((0, s - sy), (0, s - sx), (0, 0)), mode="reflect"))
            x_in = to_input(np.stack(batch), device).contiguous(memory_format=torch.channels_last)
            conf = net(x_in)
            smp = sample_patches(conf, cfg.patch_size, cfg.stride, cfg.patches_per_image,
                                 uniform=cfg.sampling == "uniform", generator=gen)
            patches = cut_patches(x_in, conf, smp)
            loss, parts = contrastive_loss(patches, smp.k, smp.positive, cfg.n_channels, cfg.similarity,
                                           featuriser=feat, inter=cfg.inter)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                opt.step()
            lv = float(loss.detach())
            info = {"loss": lv, "restart": r, **parts}
            if step % cfg.eval_every == 0 or step == cfg.steps:
                score, k, maps = _score(net, eval_crops, hem, cfg.threshold, device)
                hist.append((step, lv, score))
                if preview is not None:
                    from .predict import confidence as _confidence

                    maps = _confidence(net, preview, device=device, downsample=cfg.downsample)
                    net.train()
                info.update(score=score, channel=k, confidence=maps)
                if r_best is None or score > r_best[0]:
                    r_best = (score, r, step, k, copy.deepcopy(net.state_dict()), copy.deepcopy(feat.state_dict()))
            msg = f"restart {r + 1}/{cfg.restarts} step {step}/{cfg.steps} loss {lv:.3f}"
            yield Progress(r * cfg.steps + step, total, msg, info)
        history.append(hist)
        restart_scores.append(r_best[0])
        if best is None or r_best[0] > best[0]:
            best = r_best
    score, r, step, k, state, fstate = best
    net, feat = build(cfg.architecture())
    net.load_state_dict(state)
    feat.load_state_dict(fstate)
    net.to(device).eval()
    feat.to(device).eval()
    return TrainResult(net=net, featuriser=feat, config=cfg, score=score, channel=k, restart=r, step=step,
                       history=history, restart_scores=restart_scores, seconds=time.time() - t0,
                       selected_by="dice" if masks is not None else "hematoxylin")
