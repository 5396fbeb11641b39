"""The 'Evaluate' dock in a real napari viewer (runs under Xvfb), on the bundled sample."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_histoai.widgets import evaluate_widget as ew  # noqa: E402
from napari_histoai.widgets._layers import placement  # noqa: E402

GRID = np.array([[y, x] for y in (200, 500, 800) for x in (200, 500, 800)], float)  # T0..T8, px
T_CLS = ["epithelial", "epithelial", "epithelial", "inflammatory", "inflammatory", "inflammatory",
         "epithelial", "inflammatory", "epithelial"]
# P0..P5 2 px off T0..T5 (within 3 µm = 6.01 px at 0.499 µm/px), P6, P7 20 px off T6, T7
# (outside), P8 an extra; T8 has no prediction. TP 6, FP 3, FN 3: F_d = P = R = 2/3.
PRED = np.concatenate([GRID[:6] + 2, GRID[6:8] + [20, 0], [[100, 900]]])
P_CLS = ["epithelial", "epithelial", "inflammatory", "inflammatory", "inflammatory", "inflammatory",
         "epithelial", "inflammatory", "epithelial"]
# F_c (HoVer-Net): epi TP_c 2, FN_c 1 (P2/T2), FP_d 2 (P6, P8), FN_d 2 (T6, T8) -> 4 / 10
#                  inf TP_c 3, FP_c 1 (P2/T2), FP_d 1 (P7), FN_d 1 (T7)     -> 6 / 10


@pytest.fixture
def viewer_with_points(make_napari_viewer, sample_path):
    viewer = make_napari_viewer()
    viewer.open(str(sample_path), plugin="napari-histoai")
    image = viewer.layers[0]
    viewer.add_points(GRID, name="truth", features={"class": T_CLS}, **placement(image))
    viewer.add_points(PRED, name="result", features={"class": P_CLS}, **placement(image))
    return viewer, image


def _counts(w):
    return {k: len(w.out_layers[k].data) for k in ew.OUTCOMES}


def test_points_whole_image_region_and_view(viewer_with_points, tmp_path):
    from napari_histoai.io.points import read_csv_rows

    viewer, image = viewer_with_points
    w = ew.EvaluateWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert [w.pred_combo.itemText(i) for i in range(w.pred_combo.count())] == ["truth", "result"]
    w.pred_combo.setCurrentText("result")
    w.truth_combo.setCurrentText("truth")
    assert w.pixel_size.spin.value() == pytest.approx(0.499)  # from the layers' µm scale
    w.eval_btn.click()
    r = w.result
    assert r is not None, w.last_error
    cells = {w.table.item(i, 0).text(): w.table.item(i, 1).text() for i in range(w.table.rowCount())}
    assert cells["F_d"] == cells["P"] == cells["R"] == "0.6667"
    assert cells["F_c epithelial"] == "0.4000" and cells["F_c inflammatory"] == "0.6000"
    assert cells["mean F_c"] == "0.5000" and (cells["TP"], cells["FP"], cells["FN"]) == ("6", "3", "3")
    assert _counts(w) == {"matched": 6, "missed": 3, "false": 3}
    colours = {tuple(np.round(w.out_layers[k].face_color[0], 2)) for k in ew.OUTCOMES}
    assert len(colours) == 3
    assert tuple(w.out_layers["missed"].scale) == pytest.approx(tuple(image.scale))
    assert sorted(map(tuple, w.out_layers["missed"].data)) == sorted(map(tuple, GRID[6:]))
    # the outcome layers are not offered as inputs, and a re-run replaces them
    assert w.pred_combo.count() == 2
    out = w.export_csv(str(tmp_path / "table.csv"))
    assert ["mean F_c", "0.5"] in read_csv_rows(out)

    # drawn region: rows 200 and 500 only -> T0..T5 and P0..P5
    s = image.scale[-1]
    viewer.add_shapes([np.array([[150, 150], [150, 850], [550, 850], [550, 150]]) * s], shape_type="rectangle",
                      name="roi")
    w.scope_combo.setCurrentText(ew.SCOPE_SHAPES)
    w.shapes_combo.setCurrentText("roi")
    w.run()
    assert (w.result["TP"], w.result["FP"], w.result["FN"]) == (6, 0, 0) and w.result["F_d"] == 1.0
    assert _counts(w) == {"matched": 6, "missed": 0, "false": 0}
    assert sum(ly.name == "matched" for ly in viewer.layers) == 1

    # current view with the whole image in view: the whole-image counts
    viewer.reset_view()
    w.scope_combo.setCurrentText(ew.SCOPE_VIEW)
    w.run()
    assert (w.result["TP"], w.result["FP"], w.result["FN"]) == (6, 3, 3)


def test_labels_dice_aji_and_bad_input(make_napari_viewer):
    viewer = make_napari_viewer()
    truth = np.zeros((40, 40), np.uint16)
    truth[0:4, 0:4] = 1
    truth[10:14, 10:14] = 2
    pred = np.zeros((40, 40), np.uint16)
    pred[0:4, 1:5] = 5   # IoU 0.6 with 1
    pred[10:14, 0:4] = 7  # false; truth 2 missed
    kw = dict(scale=(0.5, 0.5), units=("µm", "µm"))
    viewer.add_labels(truth, name="gt", **kw)
    viewer.add_labels(pred, name="seg", **kw)
    w = ew.EvaluateWidget(viewer)
    w.pred_combo.setCurrentText("seg")
    w.truth_combo.setCurrentText("gt")
    r = w.run()
    assert r is not None, w.last_error
    assert r["Dice"] == pytest.approx(0.375) and r["AJI"] == pytest.approx(12 / 52)
    assert r["object-F1"] == pytest.approx(0.5) and r["PQ"] == pytest.approx(0.3)
    cells = {w.table.item(i, 0).text(): w.table.item(i, 1).text() for i in range(w.table.rowCount())}
    assert cells["AJI"] == "0.2308"
    assert set(np.unique(w.out_layers["matched"].data)) == {0, 5}
    assert set(np.unique(w.out_layers["missed"].data)) == {0, 2}
    assert set(np.unique(w.out_layers["false"].data)) == {0, 7}
    assert tuple(w.out_layers["false"].scale) == (0.5, 0.5)

    # bad input: labels of another shape -> one line, no new layers, the table stays
    viewer.add_labels(pred[:30], name="small", **kw)
    n = len(viewer.layers)
    w.pred_combo.setCurrentText("small")
    assert w.run() is None
    assert "\n" not in w.last_error and "30 px" in w.last_error and w.status.text().startswith("Error:")
    assert len(viewer.layers) == n and w.result is r
    # points against labels: one line too
    viewer.add_points(np.array([[1.0, 1.0]]), name="pts", **kw)
    w.pred_combo.setCurrentText("pts")
    assert w.run() is None and "same kind" in w.last_error
