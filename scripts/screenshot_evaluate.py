"""Take the 'Evaluate' screenshot from a real run: a CRCHistoPhenotypes validation tile with its
ground-truth nuclei, the bundled detector's nuclei on it, the Evaluate dock's table, and the
matched / missed / false layers; save the window to docs/evaluate.png (256 colours, small).

    xvfb-run -a -s "-screen 0 1400x900x24" python scripts/screenshot_evaluate.py \
        [--tile img16] [--model acformer-crc] [--out docs/evaluate.png]

Needs the shared data (``../shared/data`` or ``$HISTOAI_DATA``); the tile is read at
0.5 µm/px (20x) as the dataset states.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_histoai.io.points import read_points_csv
from napari_histoai.tasks import detect_file
from napari_histoai.widgets.evaluate_widget import EvaluateWidget

from _gui import wait  # noqa: E402 (scripts/)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HISTOAI_DATA", ROOT.parent / "shared" / "data"))
MPP = 0.5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", default="img16", help="CRCHistoPhenotypes validation tile name")
    ap.add_argument("--model", default="acformer-crc", help="detector name or folder")
    ap.add_argument("--out", default=str(ROOT / "docs" / "evaluate.png"), help="PNG to write")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    args = ap.parse_args(argv)
    image_path = DATA / "crchisto" / "val" / "images" / f"{args.tile}.png"
    truth_path = DATA / "crchisto" / "val" / "points" / f"{args.tile}.csv"
    if not image_path.is_file() or not truth_path.is_file():
        print(f"no tile {args.tile} under {DATA / 'crchisto' / 'val'}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        pred_path = Path(tmp) / "pred.csv"
        s = detect_file(image_path, pred_path, model=args.model, mpp=MPP, device=args.device)
        pred, truth = read_points_csv(pred_path), read_points_csv(truth_path)

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 860)
    place = dict(scale=(MPP, MPP), units=("µm", "µm"))
    viewer.add_image(np.asarray(Image.open(image_path).convert("RGB")), name=image_path.name, rgb=True, **place)
    size = 5.0 / MPP
    viewer.add_points(truth.yx, name="ground truth", features={"class": truth.classes}, size=size,
                      face_color="transparent", border_color="white", visible=False, **place)
    viewer.add_points(pred.yx, name=f"nuclei ({s['model']})", features={"class": pred.classes}, size=size,
                      visible=False, **place)
    w = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(w, name="Evaluate")
    w.pred_combo.setCurrentText(f"nuclei ({s['model']})")
    w.truth_combo.setCurrentText("ground truth")
    if w.run() is None:
        print(f"evaluation failed: {w.last_error}", file=sys.stderr)
        return 1
    viewer.reset_view()
    wait(app)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(shot)[..., :3]).quantize(256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
    r = w.result
    print(f"{out} ({out.stat().st_size // 1024} KB): F_d {r['F_d']:.3f}, mean F_c {r['mean F_c']:.3f}, "
          f"TP {r['TP']}, FP {r['FP']}, FN {r['FN']}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
