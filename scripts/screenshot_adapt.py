"""Take the 'Adapt from fluorescence' screenshot from a real run: open the bundled H&E sample in
napari, run the dock's "Segment nuclei (instances)" with the bundled CyC-PDAM model on a drawn
region, show the instance labels over the image, save the window to docs/adapt.png.

    xvfb-run -a -s "-screen 0 1400x900x24" python scripts/screenshot_adapt.py \
        [--model cycpdam-he] [--region 256,256,768,768] [--out docs/adapt.png]

``--model``: an adapted model's name (bundled or trained) or a model folder.
``--region``: y0,x0,y1,x1 in level-0 px of the sample.
"""

import argparse
import sys
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_histoai.bundled import sample_path
from napari_histoai.widgets._adapt_segment import REGION_SHAPES
from napari_histoai.widgets.adapt_widget import AdaptWidget

from _gui import wait, wait_for_job  # noqa: E402 (scripts/)

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cycpdam-he", help="adapted model name or folder")
    ap.add_argument("--region", default="256,256,768,768", help="y0,x0,y1,x1 level-0 px of the sample")
    ap.add_argument("--out", default=str(ROOT / "docs" / "adapt.png"), help="PNG to write")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the labels")
    args = ap.parse_args(argv)
    y0, x0, y1, x1 = (float(v) for v in args.region.split(","))

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 860)
    viewer.open(str(sample_path()), plugin="napari-histoai")
    image = viewer.layers[-1]
    corners = np.array([[y0, x0], [y0, x1 - 1], [y1 - 1, x1 - 1], [y1 - 1, x0]], float)
    world = np.array([image.data_to_world(c) for c in corners])
    viewer.add_shapes([world], shape_type="rectangle", name="region", edge_color="#00e5ff",
                      face_color="transparent", edge_width=2.0, units=image.units)
    w = AdaptWidget(viewer)
    viewer.window.add_dock_widget(w, name="Adapt from fluorescence")
    seg = w.segment
    if Path(args.model).is_dir():
        if seg.use_model(args.model) is None:
            return 2
    elif seg.model_combo.findText(args.model) >= 0:
        seg.model_combo.setCurrentText(args.model)
    else:
        print(f"no adapted model named {args.model!r}", file=sys.stderr)
        return 2
    w.device_combo.setCurrentText(args.device)
    seg.image_combo.setCurrentText(image.name)
    seg.region_combo.setCurrentText(REGION_SHAPES)
    seg.shapes_combo.setCurrentText("region")
    if seg.start() is None:
        return 2
    if not wait_for_job(app, seg, args.timeout):
        return 1
    seg.labels_layer.contour = 2
    # zoom onto the region, a little margin around it
    lo, hi = world.min(0), world.max(0)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = tuple((lo + hi) / 2)
    canvas = np.asarray(viewer.window._qt_viewer.canvas.size, float)
    camera.zoom = float(0.9 * min(canvas / (hi - lo)))
    wait(app)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    r = seg.last_result
    print(f"{out}: {r.n_objects} nuclei in {int(y1 - y0)} x {int(x1 - x0)} px at {r.mpp_text}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
