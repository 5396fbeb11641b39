#!/usr/bin/env python
"""Self-supervised pretraining of the detector's backbone on the unlabelled H&E pixels here
(issue #14's lever: no pretrained weights can be fetched).

Method: dense VICReg (Bardes et al., ICLR 2022, applied per feature-map position as in
VICRegL): two views of one crop differ by a random flip / 90-degree turn and by independent
stain (HED) jitter and brightness / contrast jitter; the backbone's stage-2 and stage-3 maps of the second
view are turned back onto the first's grid, so each map position has an exact partner. Loss =
25 x invariance (MSE of projected partner vectors) + 25 x variance (hinge on each channel's std
over all positions of the batch) + 1 x covariance, per stage. No labels are read.

Data at 0.5 µm/px: CRCHistoPhenotypes ``train`` images (70; ``val`` is never read), the 30
MoNuSeg training tiles (40x, halved), the 41 Kather tissue tiles and ``CMU-1-Small-Region.svs``.

Writes the whole torchvision resnet18 state dict (layer4 and fc untrained) as safetensors, the
format ``train_job(backbone_weights=...)`` / ``histoai train-detector --backbone-weights`` and
``scripts/train_default_detector.py --backbone-weights`` read. Resumable (``<out>.state``):

    python scripts/pretrain_backbone.py --out runs/ssl/resnet18.safetensors --steps 3000 --threads 2
    python scripts/pretrain_backbone.py --out runs/ssl/resnet18.safetensors --steps 3000 --device cuda --batch 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HISTOAI_DATA", ROOT / ".." / "shared" / "data")).resolve()


def load_images(limit: int | None = None) -> list[np.ndarray]:
    """uint8 [H, W, 3] images at 0.5 µm/px (see the module docstring); ``limit`` per source."""
    import tifffile
    from PIL import Image

    def png(paths, half=False):
        out = []
        for p in sorted(paths)[:limit]:
            im = Image.open(p).convert("RGB")
            if half:
                im = im.resize((im.width // 2, im.height // 2), Image.BILINEAR)
            out.append(np.asarray(im))
        return out

    ims = png((DATA / "crchisto" / "train" / "images").glob("*.png"))
    ims += png((DATA / "monuseg" / "train" / "images").glob("*.png"), half=True)
    ims += png((DATA / "tissue_tiles").rglob("*.png")) + png((DATA / "tissue_tiles").rglob("*.tif"))
    svs = DATA / "slides" / "CMU-1-Small-Region.svs"
    if svs.is_file() and limit is None:
        ims.append(np.ascontiguousarray(tifffile.imread(svs)[..., :3]))
    return [im for im in ims if min(im.shape[:2]) >= 64]


def dense_vicreg(a, b, inv=25.0, var=25.0, cov=1.0):
    """VICReg over map positions: ``a``, ``b`` [B, C, H, W] aligned maps -> scalar loss."""
    import torch
    import torch.nn.functional as F

    x = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])
    y = b.permute(0, 2, 3, 1).reshape(-1, b.shape[1])
    loss = inv * F.mse_loss(x, y)
    for z in (x, y):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        loss = loss + var * F.relu(1 - std).mean() / 2
        c = (z.T @ z) / (len(z) - 1)
        off = c - torch.diag(torch.diag(c))
        loss = loss + cov * off.pow(2).sum() / z.shape[1] / 2
    return loss


def turn(x, k: int, flip: bool):
    """D4 transform of [B, C, H, W] maps (``k`` quarter turns after an optional left-right flip)."""
    import torch

    if flip:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, k, dims=(2, 3))


def unturn(x, k: int, flip: bool):
    import torch

    x = torch.rot90(x, -k, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if flip else x


def make_batch(ims, rng, batch: int, crop: int):
    """Two photometric views [B, 3, crop, crop] float in [0, 1] of the same random crops."""
    from napari_histoai.methods.detection.data import hed_jitter

    v1, v2 = [], []
    for _ in range(batch):
        im = ims[int(rng.integers(len(ims)))]
        h, w = im.shape[:2]
        y, x = int(rng.integers(0, max(1, h - crop + 1))), int(rng.integers(0, max(1, w - crop + 1)))
        c = np.zeros((crop, crop, 3), np.float32) + 1.0
        part = im[y:y + crop, x:x + crop].astype(np.float32) / 255.0
        c[:part.shape[0], :part.shape[1]] = part
        for out in (v1, v2):
            v = hed_jitter(c, rng, 0.05)
            v = v * (1 + rng.uniform(-0.15, 0.15)) + rng.uniform(-0.08, 0.08)  # contrast, brightness
            out.append(np.clip(v, 0, 1).transpose(2, 0, 1))
    return np.stack(v1), np.stack(v2)


def to_torchvision(backbone) -> dict:
    """The project's Backbone (stem + body) as a full torchvision resnet18 state dict."""
    import torchvision.models as tvm

    full = tvm.resnet18(weights=None)
    full.conv1, full.bn1 = backbone.stem[0], backbone.stem[1]
    for i, block in enumerate(backbone.body):
        setattr(full, f"layer{i + 1}", block)
    return {k: v.detach().cpu().contiguous() for k, v in full.state_dict().items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="weights file (.safetensors); <out>.state holds the resumable run")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128, help="crop size in px at 0.5 µm/px (a multiple of 16)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="at most this many images per source (smoke runs)")
    a = ap.parse_args(argv)
    if a.crop % 16:
        ap.error("--crop must be a multiple of 16 (the stage-3 stride)")

    import torch
    import torch.nn as nn
    from safetensors.torch import save_file

    from napari_histoai.methods.detection.backbone import Backbone

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    ims = load_images(a.limit)
    print(f"{len(ims)} images, {sum(im.shape[0] * im.shape[1] for im in ims) / 1e6:.1f} MP at 0.5 µm/px", flush=True)
    net = Backbone("resnet18", (2, 3)).to(dev)
    heads = nn.ModuleList([nn.Sequential(nn.Conv2d(c, 512, 1), nn.BatchNorm2d(512), nn.ReLU(), nn.Conv2d(512, 512, 1))
                           for c in net.channels]).to(dev)
    opt = torch.optim.AdamW(list(net.parameters()) + list(heads.parameters()), lr=a.lr, weight_decay=1e-4)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = out.with_name(out.name + ".state")
    step, seconds, losses = 0, 0.0, []
    if state.is_file():
        st = torch.load(str(state), map_location="cpu", weights_only=True)
        net.load_state_dict(st["net"]), heads.load_state_dict(st["heads"]), opt.load_state_dict(st["opt"])
        step, seconds = int(st["step"]), float(st["seconds"])
        print(f"resumed at step {step}", flush=True)

    def save():
        tmp = state.with_name(state.name + ".tmp")
        torch.save({"net": net.state_dict(), "heads": heads.state_dict(), "opt": opt.state_dict(), "step": step,
                    "seconds": seconds}, str(tmp))
        tmp.replace(state)
        wtmp = out.with_name(out.name + ".tmp")
        save_file(to_torchvision(net), str(wtmp), metadata={"steps": str(step), "method": "dense VICReg",
                                                             "command": " ".join(["python"] + sys.argv)})
        wtmp.replace(out)

    net.train(), heads.train()
    while step < a.steps:
        t0 = time.time()
        rng = np.random.default_rng([a.seed, step])
        v1, v2 = make_batch(ims, rng, a.batch, a.crop)
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        x1 = torch.from_numpy(v1).to(dev)
        x2 = turn(torch.from_numpy(v2).to(dev), k, flip)
        lr = float(a.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * step / a.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        f1, f2 = net(x1), net(x2)
        loss = sum(dense_vicreg(h(m1), unturn(h(m2), k, flip)) for h, m1, m2 in zip(heads, f1, f2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seconds += time.time() - t0
        losses.append(loss.item())
        if step % 10 == 0 or step == a.steps:
            print(json.dumps({"step": step, "loss": round(float(np.mean(losses[-10:])), 4), "lr": round(lr, 6),
                              "sec": round(seconds, 1)}), flush=True)
        if step % 100 == 0 or step == a.steps:
            save()
    print(f"wrote {out} ({step} steps, {seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
