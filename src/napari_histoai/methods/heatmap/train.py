"""The heatmap trainer: stage-1 patch segmentation with EM rounds, stage 2 after each round,
the round with the lowest stage-2 loss kept (Li et al.; METHODS.md section 4).

:func:`train_heatmap_job` is a job (yields Progress with ``info`` = {round, phase, loss,
stage2_loss}; returns a :class:`HeatmapTrainResult`). By ``config.mode``:

* ``mixed``: round 0 trains on the drawn regions (fine labels; with ``annotations_complete``
  the rest of a drawn slide's tissue is non-tumour); then each round r = 1..R: M-step from the
  previous model (warm start) on batches of fine : pseudo : hard-negative crops at the ratio R
  (2 : 1 : 7, :func:`..mixed_supervision.mix_schedule`) with soft-label BCE; predict every patch;
  stage 2; E-step for the next round. Rounds 1..R compete on the stage-2 loss.
* ``pixel``: round 0 only (drawn regions, no pseudo labels), then stage 2.
* ``image``: no drawn regions: round 0 and rounds 1..R each train on the top ``mil_k`` patches
  of every slide with the slide label (hard, whole patch), re-selected every round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ...engine.jobs import Progress
from ...errors import CancelFlag, JobError, check_cancel
from .config import HeatmapConfig
from .data import SlidePatches, TrainingSlide, slide_patches
from .em import e_step, mil_selection
from .stage2 import best_round, slide_probs, stage2_inputs, top_k, train_stage2

__all__ = ["HeatmapTrainResult", "train_heatmap_job", "predict_patches"]


@dataclass
class HeatmapTrainResult:
    seg_state: dict
    cls_state: dict
    config: HeatmapConfig
    threshold: float                     # lowest training tumour-slide score (100 % sensitivity on training)
    rounds: list = field(default_factory=list)   # per round {round, stage1_loss, stage2_loss, n_fine, n_pseudo, n_negative, dropped}
    best_round: int = 0
    slides: list = field(default_factory=list)   # per slide {name, label, annotated, patches, score}
    seconds: float = 0.0


def predict_patches(net, images: np.ndarray, device, batch: int = 16) -> np.ndarray:
    """Tumour probability maps [N, P/s, P/s] float32 of patches [N, P, P, 3] uint8 (eval mode)."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).to(device).permute(0, 3, 1, 2)
            out.append(torch.sigmoid(net(x.float()))[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)


class _Pools:
    """Training crops: (slide, patch, target map or a constant) per kind, drawn at the ratio."""

    def __init__(self, data: Sequence[SlidePatches], cfg: HeatmapConfig, rng):
        self.data, self.cfg, self.rng = data, cfg, rng
        self.pools = {"fine": [], "pseudo": [], "negative": []}

    def set(self, kind: str, items: list) -> None:
        self.pools[kind] = items

    def batch(self, kinds: list):
        """(images [B, 3, c, c] uint8 tensor, targets [B, 1, c/s, c/s] float tensor)."""
        import torch

        c, s = self.cfg.crop, self.cfg.stride
        xs, ys = [], []
        for kind in kinds:
            pool = self.pools[kind]
            sl, j, target = pool[int(self.rng.integers(len(pool)))]
            img = self.data[sl].images[j]
            p = img.shape[0]
            g = (p - c) // s  # crop offsets on the heatmap grid
            oy, ox = int(self.rng.integers(g + 1)) * s, int(self.rng.integers(g + 1)) * s
            crop = img[oy:oy + c, ox:ox + c]
            if isinstance(target, np.ndarray):
                t = target[oy // s:(oy + c) // s, ox // s:(ox + c) // s]
            else:
                t = np.full((c // s, c // s), float(target), np.float32)
            k = int(self.rng.integers(4))
            crop, t = np.rot90(crop, k), np.rot90(t, k)
            if self.rng.random() < 0.5:
                crop, t = crop[:, ::-1], t[:, ::-1]
            xs.append(np.ascontiguousarray(crop).transpose(2, 0, 1))
            ys.append(np.ascontiguousarray(t)[None])
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.float32))


def _fine_items(data: Sequence[SlidePatches], complete: bool) -> list:
    items = []
    for i, d in enumerate(data):
        if d.fine is None:
            continue
        for j in range(len(d)):
            if complete or d.fine[j].max() > 0:
                items.append((i, j, d.fine[j]))
    return items


def train_heatmap_job(slides: Sequence[TrainingSlide], config: Optional[HeatmapConfig] = None, *,
                      device="auto", cancel: Optional[CancelFlag] = None):
    """Train a tumour-heatmap model from labelled slides (some with drawn tumour regions)."""
    import torch

    from ...engine.devices import pick_device
    from ..mixed_supervision import mix_schedule
    from .network import PatchSegNet

    cfg = config or HeatmapConfig()
    dev = pick_device(device) if isinstance(device, str) else device
    t_start = time.perf_counter()
    slides = list(slides)
    labels = [int(s.label) for s in slides]
    if not any(labels) or all(labels):
        raise JobError("training needs at least one tumour slide and one slide without tumour")
    if cfg.mode in ("mixed", "pixel") and not any(s.regions and s.label for s in slides):
        raise JobError(f"mode {cfg.mode!r} needs tumour regions drawn on at least one tumour slide "
                       "(or train with mode 'image' from slide labels alone)")
    for s in slides:
        if s.regions and not s.label:
            raise JobError(f"{s.name} has tumour regions drawn but is labelled as without tumour")

    steps_total = cfg.init_steps + (0 if cfg.mode == "pixel" else cfg.rounds * cfg.round_steps)
    n_rounds = 1 if cfg.mode == "pixel" else cfg.rounds + 1
    total = len(slides) + steps_total + n_rounds * cfg.stage2_epochs
    done = 0
    data: list[SlidePatches] = []
    for i, s in enumerate(slides):
        yield Progress(done, total, f"reading {s.name} ({i + 1}/{len(slides)})")
        data.append(slide_patches(s, cfg.mpp, cfg.patch, cfg.overlap, cfg.stride, cfg.tissue_min, cancel=cancel))
        done += 1
    if cfg.mode == "image":
        for d in data:
            d.fine = None
    annotated = [d.fine is not None for d in data]

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = PatchSegNet(cfg.width, cfg.stride, cfg.fusestyle).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    pools = _Pools(data, cfg, rng)
    pools.set("fine", _fine_items(data, cfg.annotations_complete))
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def m_step(steps: int, ratio, r: int):
        nonlocal done
        avail = [bool(pools.pools[k]) for k in ("fine", "pseudo", "negative")]
        losses = []
        for step in range(steps):
            check_cancel(cancel)
            net.train()
            x, t = pools.batch(mix_schedule(ratio, avail, cfg.batch, rng))
            loss = bce(net(x.to(dev).float()), t.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            done += 1
            if step % 10 == 9 or step == steps - 1:
                yield Progress(done, total, f"round {r}: step {step + 1}/{steps}, loss {np.mean(losses[-10:]):.3f}",
                               info={"round": r, "phase": "stage 1", "loss": float(np.mean(losses[-10:]))})
        return float(np.mean(losses[-max(1, steps // 5):])) if losses else float("nan")

    def stage2(r: int):
        nonlocal done
        yield Progress(done, total, f"round {r}: predicting {sum(len(d) for d in data)} patches",
                       info={"round": r, "phase": "predict"})
        probs = [predict_patches(net, d.images, dev) for d in data]
        inputs = []
        for d, pm in zip(data, probs):
            idx = top_k(pm.reshape(len(pm), -1).max(1), cfg.K)
            inputs.append(stage2_inputs(d.images[idx], pm[idx]))
        check_cancel(cancel)
        cls, loss2 = train_stage2(inputs, labels, epochs=cfg.stage2_epochs, lr=cfg.stage2_lr, device=dev,
                                  seed=cfg.seed + r, members=cfg.stage2_members, cancel=cancel)
        done += cfg.stage2_epochs
        yield Progress(done, total, f"round {r}: stage-2 loss {loss2:.3f}",
                       info={"round": r, "phase": "stage 2", "stage2_loss": loss2})
        return probs, inputs, cls, loss2

    rounds, snapshots = [], []

    def record(r, loss1, loss2, cls, inputs, n_pseudo=0, n_neg=0, dropped=0):
        rounds.append({"round": r, "stage1_loss": round(loss1, 4), "stage2_loss": round(loss2, 4),
                       "n_fine": len(pools.pools["fine"]), "n_pseudo": n_pseudo, "n_negative": n_neg,
                       "dropped": dropped})
        snapshots.append(({k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                          {k: v.detach().cpu().clone() for k, v in cls.state_dict().items()},
                          slide_probs(cls, inputs, dev)))

    if cfg.mode == "image":
        probs = [predict_patches(net, d.images, dev) for d in data]
        for r in range(cfg.rounds + 1):
            sel = mil_selection(probs, labels, cfg.mil_k)
            pools.set("fine", [(i, j, float(lab)) for i, j, lab in sel])
            loss1 = yield from m_step(cfg.init_steps if r == 0 else cfg.round_steps, (1, 0, 0), r)
            probs, inputs, cls, loss2 = yield from stage2(r)
            record(r, loss1, loss2, cls, inputs, n_pseudo=len(sel))
    else:
        loss1 = yield from m_step(cfg.init_steps, (1, 0, 0), 0)
        probs, inputs, cls, loss2 = yield from stage2(0)
        record(0, loss1, loss2, cls, inputs)
        if cfg.mode == "mixed":
            for r in range(1, cfg.rounds + 1):
                es = e_step(probs, labels, annotated, T=cfg.T, V=cfg.V, zero_below=cfg.zero_below,
                            min_negatives=cfg.min_negatives, all_negatives=cfg.negatives == "all")
                pools.set("pseudo", es.pseudo)
                pools.set("negative", [(i, j, 0.0) for i, j in es.negatives])
                loss1 = yield from m_step(cfg.round_steps, cfg.ratio, r)
                probs, inputs, cls, loss2 = yield from stage2(r)
                record(r, loss1, loss2, cls, inputs, len(es.pseudo), len(es.negatives), es.dropped)
    # the paper's stopping rule: the round with the lowest stage-2 loss (rounds >= 1 when there are EM rounds)
    first = 1 if len(rounds) > 1 else 0
    best = first + best_round([r["stage2_loss"] for r in rounds[first:]])
    seg_state, cls_state, scores = snapshots[best]
    pos = [s for s, lab in zip(scores, labels) if lab]
    threshold = float(min(pos)) if pos else 0.5
    info = [{"name": s.name, "label": s.label, "annotated": bool(a), "patches": len(d), "score": round(float(p), 4)}
            for s, a, d, p in zip(slides, annotated, data, scores)]
    yield Progress(total, total, f"kept round {rounds[best]['round']} (lowest stage-2 loss)")
    return HeatmapTrainResult(seg_state, cls_state, cfg, threshold, rounds, rounds[best]["round"], info,
                              time.perf_counter() - t_start)
