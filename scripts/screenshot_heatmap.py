"""Take the tumour-heatmap screenshot from a real run: open a slide in napari, run the
"Tumour heatmap" dock with a trained model, show the heatmap over the slide with the top-K
boxes, save the window to docs/heatmap.png.

    xvfb-run -a -s "-screen 0 1400x900x24" python scripts/screenshot_heatmap.py \
        --slide SLIDE.ome.tif --model heatmap-20250101-1200 [--out docs/heatmap.png] [--box 1]

``--model``: a model name (from ``histoai train-heatmap`` or the dock) or a model folder.
``--box N``: zoom onto the N-th top patch instead of showing the whole slide.
"""

import argparse
import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_histoai.widgets.heatmap_widget import HeatmapWidget

from _gui import wait  # noqa: E402 (scripts/)

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", required=True, help="slide or image file")
    ap.add_argument("--model", required=True, help="heatmap model name or folder")
    ap.add_argument("--out", default=str(ROOT / "docs" / "heatmap.png"), help="PNG to write")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    ap.add_argument("--box", type=int, default=0, help="zoom onto this top patch (1 = the first); 0: whole slide")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the heatmap")
    args = ap.parse_args(argv)

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1300, 800)
    viewer.open(args.slide, plugin="napari-histoai")
    w = HeatmapWidget(viewer)
    viewer.window.add_dock_widget(w, name="Tumour heatmap")
    if Path(args.model).is_dir():
        if w.use_model(args.model) is None:
            return 2
    elif w.model_combo.findText(args.model) >= 0:
        w.model_combo.setCurrentText(args.model)
    else:
        print(f"no heatmap model named {args.model!r}", file=sys.stderr)
        return 2
    w.device_combo.setCurrentText(args.device)
    if w.make_heatmap() is None:
        return 2
    t0 = time.time()
    while w.panel.running and time.time() - t0 < args.timeout:
        app.processEvents()
        time.sleep(0.02)
    if w.last_result is None:
        print(f"no heatmap: {w.panel.last_error or w.panel.status.text()}", file=sys.stderr)
        return 1
    viewer.reset_view()
    if args.box and w.topk_layer is not None:
        w.show_box(args.box - 1)
    wait(app)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    r = w.last_result
    print(f"{out}: {r.call}, score {r.score:.3f} (threshold {r.threshold:.3f}), {len(r.top_k)} top patches")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
