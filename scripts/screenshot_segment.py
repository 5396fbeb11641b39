"""Take the 'Segment nuclei' screenshot from a real run: open the bundled H&E sample in napari,
run the dock's default method (the self-trained U-Net: Train & segment on the whole image, no
labels), show the instance labels over the image, save the window to docs/segment.png.

    xvfb-run -a -s "-screen 0 1400x900x24" python scripts/screenshot_segment.py \
        [--steps 300] [--region y0,x0,y1,x1] [--out docs/segment.png]

``--region``: train and segment only there (y0,x0,y1,x1 in level-0 px of the sample; default:
the whole image). The view is zoomed onto ``--view`` (y0,x0,y1,x1 level-0 px).
"""

import argparse
import sys
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_histoai.bundled import sample_path
from napari_histoai.widgets import segment_widget as sw

from _gui import wait, wait_for_job  # noqa: E402 (scripts/)

ROOT = Path(__file__).resolve().parents[1]


def box(text: str) -> tuple:
    return tuple(float(v) for v in text.split(","))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the method's)")
    ap.add_argument("--region", default=None, help="y0,x0,y1,x1 level-0 px to train and segment (default: whole)")
    ap.add_argument("--view", default="520,430,910,730", help="y0,x0,y1,x1 level-0 px to zoom onto")
    ap.add_argument("--out", default=str(ROOT / "docs" / "segment.png"), help="PNG to write")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    ap.add_argument("--timeout", type=float, default=1200, help="seconds to wait for the labels")
    args = ap.parse_args(argv)

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 860)
    viewer.open(str(sample_path()), plugin="napari-histoai")
    image = viewer.layers[-1]
    w = sw.SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment nuclei (self-supervised)")
    w.image_combo.setCurrentText(image.name)
    w.device_combo.setCurrentText(args.device)
    if args.region:
        y0, x0, y1, x1 = box(args.region)
        corners = np.array([[y0, x0], [y0, x1 - 1], [y1 - 1, x1 - 1], [y1 - 1, x0]], float)
        viewer.add_shapes([np.array([image.data_to_world(c) for c in corners])], shape_type="rectangle",
                          name="region", edge_color="#00e5ff", face_color="transparent", edge_width=2.0,
                          units=image.units)
        w.region_combo.setCurrentText(sw.REGION_SHAPES)
        w.shapes_combo.setCurrentText("region")
    st = w.selftrain
    if args.steps:
        st.steps_spin.setValue(args.steps)
    st.name_edit.setText("sample-selftrained")
    if st.start() is None:
        return 2
    if not wait_for_job(app, st, args.timeout):
        return 1
    st.labels_layer.contour = 1
    y0, x0, y1, x1 = box(args.view)
    lo = np.asarray(image.data_to_world((y0, x0)))[-2:]
    hi = np.asarray(image.data_to_world((y1, x1)))[-2:]
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = tuple((lo + hi) / 2)
    canvas = np.asarray(viewer.window._qt_viewer.canvas.size, float)
    camera.zoom = float(min(canvas / (hi - lo)))
    wait(app, 1.0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shot = Image.fromarray(np.asarray(viewer.screenshot(canvas_only=False, flash=False))[..., :3])
    for colors in (256, 128, 64):  # a palette PNG under 300 KB
        shot.quantize(colors, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
        if out.stat().st_size < 300_000:
            break
    print(f"{out} ({out.stat().st_size // 1024} KB): {st.summary.text().splitlines()[0]}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
