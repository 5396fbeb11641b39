#!/usr/bin/env python
"""A second-stage patch classifier that re-types the bundled detector's points (issue #14,
session 13, 2026-12-06): measured, not adopted.

Why: with the detector's points kept and every matched point given its true class, mean F_c on
crchisto/val would be 0.740 (0.739 on the hold-out) against 0.481 today, and the class accuracy
of matched pairs is 0.817 (val) / 0.780 (hold-out): the class choice, not detection, is most of
the F_c gap. A classifier that sees a wider, full-resolution context than the dense head's
class map might choose better, or add an independent view.

What: a small CNN (a stride-2 stem and three stride-2 stages of two 3 x 3 convs, width 32, global
average pool; 1.2 M weights) on ``--crop`` px RGB crops at 0.5 µm/px centred on a nucleus, trained
from scratch on the labelled nuclei of the 60 training tiles (the 10 held-out tiles excluded):
centres jittered by up to 3 px (the detector's offsets), rot90 / flips, HED jitter 0.05 and
colour jitter 0.1, cross-entropy with label smoothing 0.1, AdamW one-cycle lr 2e-3, batch 64.
At inference the 4 rotations' log-probabilities are averaged. Scored on the detector's own
points (tiles run whole, without the detect job's stain matching, as ``probe_detector_variants.py
class-bias``): the head's class alone, the patch classifier's alone, and their log-probabilities
summed (weight 1 or 0.5 on the head's). The hold-out would pick; val only reports.

    python benchmarks/probe_point_classifier.py --crop 64 --steps 1500
    python benchmarks/probe_point_classifier.py --crop 96 --steps 1500
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import DATA
from probe_detector_variants import _head_points_probs

CRC = DATA / "crchisto"


def _net(width: int, k: int):
    import torch.nn as nn

    def stage(i: int, o: int):
        return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class PatchClassifier(nn.Module):
        """crops [N, 3, C, C] in [0, 1] -> class logits [N, K]."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(stage(3, width), stage(width, 2 * width), stage(2 * width, 4 * width),
                                          stage(4 * width, 8 * width))
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(8 * width, k)

        def forward(self, x):
            return self.fc(self.drop(self.features((x - 0.5) / 0.25).mean((2, 3))))

    return PatchClassifier()


def _crops(padded: list, rows, crop: int, pad: int, rng=None) -> np.ndarray:
    """rows of (image index, y, x) px -> float32 [N, crop, crop, 3] in [0, 1]; with ``rng``: the
    centre jittered by U(-3, 3) px, a random rot90 and flip."""
    out = np.empty((len(rows), crop, crop, 3), np.float32)
    for k, (i, y, x) in enumerate(rows):
        if rng is not None:
            y, x = y + rng.uniform(-3, 3), x + rng.uniform(-3, 3)
        y0, x0 = int(round(y)) + pad - crop // 2, int(round(x)) + pad - crop // 2
        c = padded[int(i)][y0:y0 + crop, x0:x0 + crop].astype(np.float32) / 255.0
        if rng is not None:
            c = np.rot90(c, rng.integers(4))
            c = c[:, ::-1] if rng.random() < 0.5 else c
        out[k] = c
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crop", type=int, default=64, help="crop side, px at 0.5 µm/px")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--model", default="acformer-crc")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    from napari_histoai.methods.detection.data import _color_jitter, hed_jitter, load_folder
    from napari_histoai.methods.detection.predict import load_acformer
    from napari_histoai.methods.detection.selection import selection_split
    from napari_histoai.metrics import pooled_classification_scores

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    det = load_acformer(a.model, device="cpu")
    K = len(det.classes)
    train, hold = selection_split(load_folder(CRC / "train" / "images", CRC / "train" / "points", det.classes, 0.5, 0.5))
    val = load_folder(CRC / "val" / "images", CRC / "val" / "points", det.classes, 0.5, 0.5)
    pad = a.crop // 2 + 8
    padded = [np.pad(it.image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect") for it in train]
    rows = np.array([(i, y, x, c) for i, it in enumerate(train) for (y, x), c in zip(it.points, it.labels) if c >= 0])
    labels = rows[:, 3].astype(np.int64)
    print("labelled training nuclei per class", dict(zip(det.classes, np.bincount(labels, minlength=K).tolist())))

    net = _net(32, K)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=a.steps, pct_start=0.1)
    t0 = time.time()
    for step in range(1, a.steps + 1):
        pick = rng.choice(len(rows), 64)
        x = _crops(padded, rows[pick, :3], a.crop, pad, rng)
        x = np.stack([_color_jitter(hed_jitter(c, rng, 0.05), rng, 0.1) for c in x])
        loss = F.cross_entropy(net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()),
                               torch.from_numpy(labels[pick]), label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0:
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f} s", flush=True)
    net.eval()

    @torch.no_grad()
    def classify(items, points) -> list:
        out = []
        for it, p in zip(items, points):
            if not len(p):
                out.append(np.zeros((0, K)))
                continue
            padded1 = [np.pad(it.image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")]
            x = torch.from_numpy(_crops(padded1, [(0, y, xx) for y, xx in p], a.crop, pad)).permute(0, 3, 1, 2)
            out.append(sum(F.log_softmax(net(torch.rot90(x, r, (2, 3))), -1) for r in range(4)).numpy() / 4)
        return out

    for name, items in (("hold-out", hold), ("val", val)):
        lp = np.concatenate(classify(items, [it.points for it in items]))
        y = np.concatenate([it.labels for it in items])
        print(f"{name}: patch classifier accuracy at the true centres {(lp.argmax(-1) == y)[y >= 0].mean():.3f}")
    rules = {"head's class": lambda q, lp: q.argmax(-1),
             "patch classifier's": lambda q, lp: lp.argmax(-1),
             "sum of log-probabilities": lambda q, lp: (np.log(q / q.sum(-1, keepdims=True) + 1e-9) + lp).argmax(-1),
             "sum, head x 0.5": lambda q, lp: (0.5 * np.log(q / q.sum(-1, keepdims=True) + 1e-9) + lp).argmax(-1)}
    for name, items in (("hold-out", hold), ("val", val)):
        raw = _head_points_probs(det, items)
        lps = classify(items, [p for p, _ in raw])
        for rule, fn in rules.items():
            r = pooled_classification_scores(((p, fn(q, lp), it.points, it.labels)
                                              for it, (p, q), lp in zip(items, raw, lps)), K, 6.0)
            print(f"{name:8s} {rule:26s} F_d {r['f_d']:.3f} mean F_c {r['mean_f_c']:.3f} "
                  f"({', '.join(f'{v:.3f}' for v in r['f_c'])})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
