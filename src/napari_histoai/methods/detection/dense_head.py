"""Dense auxiliary head of AC-Former: CenterNet-style centre maps on the backbone, fused with the
transformer's query points at inference.

The head reads the backbone at strides 4, 8 and 16 (stages 1-3; a small top-down FPN, 64
channels) and predicts on the stride-4 grid ``[B, 3 + K, H/4, W/4]``:

* channel 0: centre-heat logit (a nucleus centre falls in this cell), trained with CenterNet's
  penalty-reduced focal loss against Gaussians of ``dense_sigma`` px around every target point;
* channels 1-2: sub-cell offset (y, x) of the centre, sigmoid in [0, 1) of a cell, L1 at the
  target cells;
* channels 3..: class logits (softmax over K), cross-entropy at the target cells of points with
  a known class (label >= 0).

A detection transformer learns from one query per nucleus (one-to-one matching); the dense head
gets a target at every cell, which is the supervision a small-data model is short of (the
"dense auxiliary head" lever of DETR-style detectors). At inference :func:`fuse_points` pairs the
head's peaks with the query points (mutual nearest within ``FUSE_RADIUS_PX``) and mixes their
scores and class probabilities (``dense_mix``: 0 = queries only, 1 = head only).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DenseHead", "dense_targets", "dense_loss", "dense_peaks", "fuse_points", "flip_averaged", "FLIPS",
           "STRIDE", "FUSE_RADIUS_PX"]

STRIDE = 4            # output grid of the head (px)
WIDTH = 64            # FPN channels
FUSE_RADIUS_PX = 4.0  # a head peak and a query point closer than this (model px) are one nucleus


class DenseHead(nn.Module):
    """Backbone maps at strides (4, 8, 16) with ``channels`` -> [B, 3 + K, H/4, W/4]."""

    def __init__(self, channels: list[int], n_classes: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, WIDTH, 1) for c in channels)
        self.smooth = nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.BatchNorm2d(WIDTH), nn.ReLU(inplace=True),
                                    nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.BatchNorm2d(WIDTH), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(WIDTH, 3 + n_classes, 1)
        nn.init.constant_(self.out.bias, 0.0)
        nn.init.constant_(self.out.bias[:1], -math.log((1 - 0.01) / 0.01))  # a near-empty map at the start

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """maps: finest first ([B, C_0, H/4, W/4], [B, C_1, H/8, W/8], ...)."""
        x = self.lateral[-1](maps[-1])
        for lat, m in zip(reversed(self.lateral[:-1]), reversed(maps[:-1])):
            x = lat(m) + F.interpolate(x, size=m.shape[-2:], mode="nearest")
        x = self.smooth(x)
        # the last 1x1 layer in float32 even under autocast: bfloat16 logits tie at neighbouring
        # cells, which would make two peaks of one nucleus
        with torch.autocast(x.device.type, enabled=False):
            return self.out(x.float())


def dense_targets(targets: list, h: int, w: int, sigma_px: float, device) -> tuple:
    """Per-view targets (points [G, 2] (y, x) normalised to an h x w px view, labels [G],
    optional weights [G]) -> (heat [B, 1, h/4, w/4] in [0, 1] with exactly 1 at each centre's
    cell, offsets [B, 2, h/4, w/4], cls [B, h/4, w/4] int64 (-1 = no class target), centre mask
    [B, h/4, w/4] bool). Points with weight < 1 (pseudo labels) peak at their weight, so they
    are neither positives nor full negatives."""
    gh, gw = h // STRIDE, w // STRIDE
    B = len(targets)
    heat = torch.zeros(B, 1, gh, gw, device=device)
    off = torch.zeros(B, 2, gh, gw, device=device)
    cls = torch.full((B, gh, gw), -1, dtype=torch.long, device=device)
    centre = torch.zeros(B, gh, gw, dtype=torch.bool, device=device)
    s = max(sigma_px / STRIDE, 0.5)
    ys = torch.arange(gh, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(gw, device=device, dtype=torch.float32) + 0.5
    for b, t in enumerate(targets):
        p = t["points"].to(device).float()
        if not len(p):
            continue
        u = p * torch.tensor([h / STRIDE, w / STRIDE], device=device)  # [G, 2] in cells (edges at integers)
        wt = t.get("weights")
        wt = torch.ones(len(p), device=device) if wt is None else wt.to(device).float()
        g = torch.exp(-((ys[None, :, None] - u[:, 0, None, None]) ** 2 + (xs[None, None, :] - u[:, 1, None, None]) ** 2)
                      / (2 * s * s))  # [G, gh, gw]
        iy = u[:, 0].long().clamp(0, gh - 1)
        ix = u[:, 1].long().clamp(0, gw - 1)
        g[torch.arange(len(p), device=device), iy, ix] = 1.0
        heat[b, 0] = (g * wt[:, None, None]).amax(0)
        full = wt >= 1.0
        centre[b, iy[full], ix[full]] = True
        off[b, 0, iy, ix] = (u[:, 0] - iy).clamp(0, 1)
        off[b, 1, iy, ix] = (u[:, 1] - ix).clamp(0, 1)
        lab = t["labels"].to(device)
        known = full & (lab >= 0)
        cls[b, iy[known], ix[known]] = lab[known]
    heat = torch.where(centre[:, None], torch.ones_like(heat), heat.clamp(max=0.99))
    return heat, off, cls, centre


def dense_loss(dense: torch.Tensor, targets: list, sigma_px: float, ignore: torch.Tensor | None = None,
               class_weights=None) -> torch.Tensor:
    """Loss of the head's output ``dense`` [B, 3 + K, h/4, w/4] on views of h x w px: centre
    focal loss + L1 offsets + class cross-entropy, each normalised by the number of centres.
    ``ignore`` bool [B, h, w]: cells mostly in it get no heat loss (unknown areas);
    ``class_weights`` [K] (None = equal): weights of the classes in the cross-entropy."""
    B, _, gh, gw = dense.shape
    heat, off, cls, centre = dense_targets(targets, gh * STRIDE, gw * STRIDE, sigma_px, dense.device)
    logit = dense[:, :1]
    p = logit.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = heat >= 0.999
    pos_l = -F.logsigmoid(logit) * (1 - p) ** 2
    neg_l = -F.logsigmoid(-logit) * p ** 2 * (1 - heat) ** 4
    per_cell = torch.where(pos, pos_l, neg_l)
    if ignore is not None:
        known = F.avg_pool2d((~ignore).float()[:, None], STRIDE) >= 0.5
        per_cell = per_cell * known
    n = centre.sum().clamp(min=1)
    loss = per_cell.sum() / n
    if centre.any():
        loss = loss + (dense[:, 1:3].sigmoid() - off).abs().sum(1)[centre].sum() / n
    if (cls >= 0).any():
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=dense.dtype, device=dense.device)
        loss = loss + F.cross_entropy(dense[:, 3:], cls, weight=w, ignore_index=-1, reduction="sum") / n
    return loss


# test-time flips: identity, left-right, up-down, both (a 180 degree turn); a group, so the
# averaged map of a mirrored image is the mirrored map
FLIPS = ((), (3,), (2,), (2, 3))


def flip_averaged(run, images: torch.Tensor) -> torch.Tensor:
    """Test-time flips of the dense head: ``run`` maps images [B, 3, H, W] to head outputs
    [B, 3 + K, H/4, W/4]; it runs on the images and on their 3 mirror images (:data:`FLIPS`), each
    output is flipped back (a mirrored cell's sub-cell offset o becomes 1 - o along the flipped
    axis), and heat, offsets and class distributions are averaged as probabilities. Returns
    logits of the averages, [B, 3 + K, H/4, W/4], for :func:`dense_peaks`. H and W must be
    multiples of :data:`STRIDE` (so a flipped cell is a cell)."""
    if images.shape[-2] % STRIDE or images.shape[-1] % STRIDE:
        raise ValueError(f"flip averaging needs H and W divisible by {STRIDE}, got {tuple(images.shape[-2:])}")
    heat = off = prob = 0.0
    for dims in FLIPS:
        d = run(images.flip(dims) if dims else images)
        d = d.flip(dims) if dims else d
        o = d[:, 1:3].sigmoid()
        if 2 in dims:
            o = torch.stack([1 - o[:, 0], o[:, 1]], 1)
        if 3 in dims:
            o = torch.stack([o[:, 0], 1 - o[:, 1]], 1)
        heat, off, prob = heat + d[:, :1].sigmoid(), off + o, prob + d[:, 3:].softmax(1)
    n, eps = len(FLIPS), 1e-6
    return torch.cat([torch.logit((heat / n).clamp(eps, 1 - eps)), torch.logit((off / n).clamp(eps, 1 - eps)),
                      (prob / n).clamp_min(1e-12).log()], 1)


def dense_peaks(dense: torch.Tensor, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Head output [B, 3 + K, h/4, w/4] -> per image (points [N, 2] (y, x) px of the input,
    probs [N, K] = heat x class distribution): local maxima (3 x 3 cells) of the heat >= threshold."""
    heat = dense[:, 0].sigmoid()
    peak = (heat >= threshold) & (heat >= F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0])
    off = dense[:, 1:3].sigmoid()
    prob = dense[:, 3:].softmax(1)
    out = []
    for b in range(dense.shape[0]):
        iy, ix = torch.nonzero(peak[b], as_tuple=True)
        y = (iy.float() + off[b, 0, iy, ix]) * STRIDE - 0.5
        x = (ix.float() + off[b, 1, iy, ix]) * STRIDE - 0.5
        q = prob[b][:, iy, ix].T * heat[b, iy, ix][:, None]
        out.append((torch.stack([y, x], 1).cpu().numpy(), q.float().cpu().numpy()))
    return out


def fuse_points(qp: np.ndarray, qprob: np.ndarray, dp: np.ndarray, dprob: np.ndarray, mix: float,
                radius: float = FUSE_RADIUS_PX) -> tuple[np.ndarray, np.ndarray]:
    """Fuse query points (qp [N, 2] px, qprob [N, K] sigmoid probabilities) with head peaks
    (dp [M, 2], dprob [M, K] = heat x class distribution) -> (points [P, 2], probs [P, K]).

    Mutual nearest neighbours closer than ``radius`` px are one nucleus: score =
    (1 - mix) s_q + mix s_d (s = max prob), point = score-weighted mean, class distribution
    mixed the same way; an unpaired point keeps its own part only ((1 - mix) s_q or mix s_d).
    The returned probs are the fused class distribution scaled so its max is the fused score."""
    K = qprob.shape[1] if qprob.ndim == 2 else dprob.shape[1]
    if mix <= 0 or not len(dp):
        return qp, qprob * (1 - mix) if mix > 0 else qprob
    if mix >= 1 or not len(qp):
        return dp, dprob * mix if mix < 1 else dprob
    from scipy.spatial import cKDTree

    sq, sd = qprob.max(1), dprob.max(1)
    dq = qprob / np.maximum(qprob.sum(1, keepdims=True), 1e-9)
    dd = dprob / np.maximum(dprob.sum(1, keepdims=True), 1e-9)
    d1, j = cKDTree(qp).query(dp, distance_upper_bound=radius)   # head peak -> nearest query
    _, i = cKDTree(dp).query(qp, distance_upper_bound=radius)    # query -> nearest head peak
    pd = np.flatnonzero(np.isfinite(d1))
    pd = pd[i[j[pd]] == pd]                                      # mutual
    pq = j[pd]
    wq, wd = (1 - mix) * sq[pq], mix * sd[pd]
    s = wq + wd
    pts = (qp[pq] * wq[:, None] + dp[pd] * wd[:, None]) / np.maximum(s, 1e-9)[:, None]
    dist = (1 - mix) * dq[pq] + mix * dd[pd]
    lone_q = np.setdiff1d(np.arange(len(qp)), pq)
    lone_d = np.setdiff1d(np.arange(len(dp)), pd)
    pts = np.concatenate([pts, qp[lone_q], dp[lone_d]]).reshape(-1, 2)
    score = np.concatenate([s, (1 - mix) * sq[lone_q], mix * sd[lone_d]])
    dist = np.concatenate([dist, dq[lone_q], dd[lone_d]]).reshape(-1, K)
    probs = dist * (score / np.maximum(dist.max(1), 1e-9))[:, None]
    return pts.astype(np.float32), probs.astype(np.float32)
