#!/usr/bin/env python
"""Linear probe of backbone features at the clicked nuclei (issue #14, session 15): how much
cell-type information a backbone's frozen features hold, before any detector is trained on them.

For each backbone, the resnet18 stages 1-3 (64 + 128 + 256 channels at strides 4, 8, 16) are run
on whole CRCHistoPhenotypes tiles at 0.5 µm/px (eval mode), each map is sampled bilinearly at every
labelled nucleus (points of unknown class skipped) and the 448 values, standardised on the
training rows, feed a multinomial logistic regression (L-BFGS, L2 ``--l2``) fitted on the 60
training tiles (the 10 held-out tiles excluded). Accuracy and mean per-class F1 are printed for
the hold-out and crchisto/val (report only). Backbones:

* ``random``: torchvision's initialisation (the floor: what the labels alone give a linear model);
* ``ssl:FILE``: torchvision-format weights, e.g. ``scripts/pretrain_backbone.py``'s;
* ``model:NAME``: the backbone of a detector model (folder or bundled name), i.e. features
  trained with these very labels (a reference, not a fair competitor).

    python benchmarks/probe_ssl_features.py --backbones random ssl:runs/ssl/resnet18-vicreg.safetensors model:acformer-crc
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import DATA

CRC = DATA / "crchisto"


def _backbone(spec: str):
    import torch.nn as nn

    from napari_histoai.methods.detection.backbone import Backbone

    kind, _, arg = spec.partition(":")
    if kind == "random":
        return Backbone("resnet18", (1, 2, 3))
    if kind == "ssl":
        return Backbone("resnet18", (1, 2, 3), weights_path=arg)
    if kind == "model":
        from napari_histoai.methods.detection.predict import load_acformer

        bb = load_acformer(arg, device="cpu").model.backbone
        for name in ("style_early", "style_late"):
            setattr(bb, name, nn.Identity())
        bb.stages = (1, 2, 3)
        return bb
    raise SystemExit(f"unknown backbone {spec!r}: random, ssl:FILE or model:NAME")


def _features(bb, items) -> tuple[np.ndarray, np.ndarray]:
    """-> features float32 [N, 448] at the labelled nuclei, labels int [N]."""
    import torch
    import torch.nn.functional as F

    xs, ys = [], []
    bb.eval()
    with torch.no_grad():
        for it in items:
            keep = it.labels >= 0
            if not keep.any():
                continue
            img = torch.from_numpy(np.array(it.image)).permute(2, 0, 1)[None].float() / 255.0
            h, w = img.shape[-2:]
            pts = torch.from_numpy(it.points[keep].astype(np.float32))  # (y, x) px
            grid = torch.stack([(pts[:, 1] + 0.5) / w * 2 - 1, (pts[:, 0] + 0.5) / h * 2 - 1], -1)
            maps = bb(img, all_stages=True)[:3]
            f = [F.grid_sample(m, grid[None, None], align_corners=False)[0, :, 0].T for m in maps]
            xs.append(torch.cat(f, 1).numpy())
            ys.append(it.labels[keep])
    return np.concatenate(xs), np.concatenate(ys).astype(int)


def _fit(x: np.ndarray, y: np.ndarray, k: int, l2: float):
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lin = torch.nn.Linear(x.shape[1], k)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def _scores(lin, x, y, k) -> tuple[float, float]:
    import torch

    with torch.no_grad():
        p = lin(torch.from_numpy(x)).argmax(1).numpy()
    f1 = []
    for c in range(k):
        tp, fp, fn = ((p == c) & (y == c)).sum(), ((p == c) & (y != c)).sum(), ((p != c) & (y == c)).sum()
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float((p == y).mean()), float(np.mean(f1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["random"])
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch

    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.selection import selection_split

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    classes = ("epithelial", "inflammatory", "fibroblast", "others")
    train, hold = selection_split(load_folder(CRC / "train" / "images", CRC / "train" / "points", classes, 0.5, 0.5))
    val = load_folder(CRC / "val" / "images", CRC / "val" / "points", classes, 0.5, 0.5)
    print("| backbone | train nuclei | hold-out accuracy | hold-out mean F1 | val accuracy | val mean F1 |")
    print("|---|---|---|---|---|---|")
    for spec in a.backbones:
        bb = _backbone(spec)
        (xa, ya), (xh, yh), (xv, yv) = (_features(bb, s) for s in (train, hold, val))
        mu, sd = xa.mean(0), xa.std(0) + 1e-6
        lin = _fit((xa - mu) / sd, ya, len(classes), a.l2)
        (ah, fh), (av, fv) = _scores(lin, (xh - mu) / sd, yh, len(classes)), _scores(lin, (xv - mu) / sd, yv, len(classes))
        print(f"| {spec} | {len(ya)} | {ah:.3f} | {fh:.3f} | {av:.3f} | {fv:.3f} |", flush=True)
    print(f"\nCommand: `python benchmarks/probe_ssl_features.py {' '.join(argv if argv is not None else sys.argv[1:])}`. "
          f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
