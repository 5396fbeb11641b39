"""Take the README screenshot from a real run: open the bundled sample in napari, run
"Detect nuclei" with the default model, save the window to docs/screenshot.png.

    xvfb-run -a -s "-screen 0 1400x900x24" python scripts/screenshot.py
"""

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_histoai.widgets.detect_widget import DetectWidget

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1300, 800)
    viewer.open(str(ROOT / "resources" / "sample_he.tif"), plugin="napari-histoai")
    w = DetectWidget(viewer)
    viewer.window.add_dock_widget(w, name="Detect nuclei")
    if len(sys.argv) > 1:
        w.model_combo.setCurrentText(sys.argv[1])
    app = QApplication.instance()
    w.start()
    t0 = time.time()
    while w.panel.running and time.time() - t0 < 600:
        app.processEvents()
        time.sleep(0.02)
    viewer.camera.center = (0, 300 * 0.499, 450 * 0.499)
    viewer.camera.zoom = 2.2
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    out = ROOT / "docs" / "screenshot.png"
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(out, w.summary.text())
    viewer.close()
