#!/usr/bin/env python
"""Give saved detectors the range of their training stains, so images from the training lab are
no longer stain-matched (methods/stain.py: ``matching_lut``); weights and threshold unchanged.

The spread and radius (the 90th percentile of the training images' distances to the target) come
from the same CRCHistoPhenotypes training tiles the model's stain target was computed on: all 70
for AC-Former models (scripts/train_default_detector.py), the 60 of the selection split's
training part for the dense-map peer (scripts/train_densemap.py). No labels are used.

    python scripts/stamp_stain_range.py src/napari_histoai/resources/models/acformer-crc runs/densemap/s0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "crchisto").resolve()


def training_images(kind: str) -> list:
    """The training tiles a model of ``kind`` took its stain target from."""
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.selection import selection_split

    items = load_folder(DATA / "train" / "images", DATA / "train" / "points", ["x"], 0.5, 0.5)
    if kind == "densemap-detector":
        items, _ = selection_split(items)
    return [it.image for it in items]


def stamp(folder: Path, percentile: float) -> str:
    from napari_histoai.methods.stain import stain_range

    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    arch = cfg["architecture"]
    if arch.get("stain_target") is None:
        return f"{folder}: no stain target, left as it is"
    target, spread, radius = stain_range(training_images(cfg["kind"]), percentile)
    if not np.allclose(target, arch["stain_target"], atol=2e-4):
        raise SystemExit(f"{folder}: its stain target was not computed on these images; not stamped")
    arch["stain_spread"] = spread.round(5).tolist()
    arch["stain_radius"] = round(radius, 4)
    cfg.setdefault("training", {})["stain_range"] = (
        f"spread of the training images' OD statistics; radius = their {percentile:g}th percentile "
        f"distance: python scripts/stamp_stain_range.py {folder}")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".config.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent=1)
    os.replace(tmp, path)
    return f"{folder}: radius {radius:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--percentile", type=float, default=90.0)
    args = ap.parse_args()
    for m in args.models:
        print(stamp(m, args.percentile), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
