"""Grid search of the classical detector's parameters on crchisto/train (never on val).

    python benchmarks/tune_classical.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from napari_histoai.io.points import read_points_csv
from napari_histoai.methods.classical import ClassicalDetector, ClassicalParams
from napari_histoai.metrics import detection_scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    a = ap.parse_args()
    root = Path(a.data) / "crchisto" / "train"
    names = sorted(p.stem for p in (root / "images").glob("*.png"))
    imgs = [np.asarray(Image.open(root / "images" / f"{n}.png").convert("RGB")) for n in names]
    gts = [read_points_csv(root / "points" / f"{n}.csv").yx for n in names]
    rows = []
    for sigma, md, thr in itertools.product([1.5, 2.0, 2.5, 3.0], [3, 4, 5, 6], [0.02, 0.04, 0.06, 0.08, 0.1]):
        det = ClassicalDetector(ClassicalParams(sigma=sigma, min_distance=md, threshold=thr))
        tp = fp = fn = 0
        for im, gt in zip(imgs, gts):
            s = detection_scores(det.detect(im)[0], gt, 6.0)
            tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
        rows.append((2 * tp / (2 * tp + fp + fn), sigma, md, thr))
    rows.sort(reverse=True)
    print("| F_d (train, pooled) | sigma | min_distance | threshold |\n|---|---|---|---|")
    for r in rows[:8]:
        print(f"| {r[0]:.3f} | {r[1]} | {r[2]} | {r[3]} |")


if __name__ == "__main__":
    main()
