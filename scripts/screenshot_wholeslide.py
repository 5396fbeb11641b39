"""Screenshots of whole-slide results at two zoom levels: a synthetic 100k x 100k slide with
5·10⁶ nuclei in a nuclei store, opened in the "Whole-slide results" dock; zoomed out, the
per-class density layers (nuclei/mm²) with the slide's and a drawn region's counts; zoomed in,
the nuclei of the visible region as points (editable with the correction dock).

    xvfb-run -a -s "-screen 0 1400x900x24" python scripts/screenshot_wholeslide.py [--n 5000000]

Writes docs/wholeslide_out.png and docs/wholeslide_in.png (palette PNGs, < 300 KB each).
"""

import argparse
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_histoai.devdata.synthetic_nuclei import CLASSES, synthetic_nuclei, virtual_slide
from napari_histoai.io.point_store import PointStore
from napari_histoai.widgets.correct_widget import CorrectWidget
from napari_histoai.widgets.wholeslide_widget import WholeSlideWidget

ROOT = Path(__file__).resolve().parents[1]
SHAPE, MPP = (100_000, 100_000), 0.5


def wait(seconds: float = 0.6, until=None) -> None:
    app = QApplication.instance()
    t0 = time.time()
    while time.time() - t0 < seconds or (until is not None and not until() and time.time() - t0 < 30):
        app.processEvents()
        time.sleep(0.02)


def save(viewer, path: Path) -> None:
    tmp = Path(tempfile.mkdtemp()) / "shot.png"
    viewer.screenshot(str(tmp), canvas_only=False, flash=False)
    Image.open(tmp).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--out-dir", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    yx, cls, sc = synthetic_nuclei(args.n, SHAPE)
    store = PointStore.create(Path(tempfile.mkdtemp()) / "nuclei.points", yx, cls, CLASSES, sc, shape=SHAPE, mpp=MPP)
    del yx, cls, sc
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 860)
    image = viewer.add_image(virtual_slide(SHAPE), multiscale=True, rgb=True, scale=(MPP, MPP), units=("µm", "µm"),
                             name="slide (synthetic)", metadata={"mpp": MPP})
    w = WholeSlideWidget(viewer)
    viewer.window.add_dock_widget(w, name="Whole-slide results")
    ctl = w.open_store(str(store.path), image_layer=image)
    viewer.reset_view()
    # a drawn region (µm) and its counts
    c = np.array([25_000.0, 21_000.0])
    rect = np.array([c + [-3000, -4000], c + [-3000, 4000], c + [3000, 4000], c + [3000, -4000]])
    viewer.add_shapes([rect], shape_type="polygon", name="region", edge_color="#ffffff", face_color="#ffffff00",
                      edge_width=150, units=("µm", "µm"))
    w.refresh_layers()
    w.shapes_combo.setCurrentText("region")
    w.count_region()
    viewer.layers.selection.active = ctl.points_layer
    wait(1.5, until=lambda: ctl.mode == "out")
    save(viewer, out / "wholeslide_out.png")

    cw = CorrectWidget(viewer)
    viewer.window.add_dock_widget(cw, name="Correct nuclei", tabify=True)
    cam = viewer.scene.camera
    cam.center = (25_000.0, 20_500.0)
    cam.zoom = viewer.canvas.size[1] / 400.0  # 0.4 mm across
    wait(1.0, until=lambda: ctl.mode == "in" and ctl.loaded_box is not None and not ctl.busy)
    cw.points_combo.setCurrentText(ctl.points_layer.name)
    cw._adopt(ctl.points_layer)
    viewer.layers.selection.active = ctl.points_layer
    viewer.window._qt_window.resize(1400, 860)
    wait(1.5)
    save(viewer, out / "wholeslide_in.png")
    ctl.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
