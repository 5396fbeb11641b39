"""The 'Detect nuclei' dock in a real napari viewer (under Xvfb via pytest-xvfb)."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_histoai.widgets import detect_widget as dw  # noqa: E402


@pytest.fixture
def viewer_with_sample(make_napari_viewer, sample_path):
    viewer = make_napari_viewer()
    viewer.open(str(sample_path), plugin="napari-histoai")
    return viewer


def _run(widget, qtbot, timeout=120_000):
    worker = widget.start()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.panel.running, timeout=timeout)
    return worker


def test_open_sample_detect_and_get_classified_points(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    image = viewer.layers[0]
    assert image.multiscale and image.scale[-1] == pytest.approx(0.499)
    w = dw.DetectWidget(viewer)
    viewer.window.add_dock_widget(w)
    models = [w.model_combo.itemText(i) for i in range(w.model_combo.count())]
    assert models[-1] == "classical"
    w.model_combo.setCurrentText("classical")
    w.detect_btn.click()  # as the user does: the job runs in a worker thread
    assert w.panel.running and not w.detect_btn.isEnabled()
    qtbot.waitUntil(lambda: not w.panel.running, timeout=120_000)
    pts = w.last_layer
    assert pts is not None and pts in viewer.layers
    assert len(pts.data) > 300
    assert {"class", "score", "source"} <= set(pts.features.columns)
    assert set(pts.features["class"]) == {"nucleus"} and (pts.features["source"] == "model").all()
    assert tuple(pts.scale) == pytest.approx(tuple(image.scale))  # aligned in µm
    assert "nuclei" in w.summary.text()
    # re-running replaces the layer (default) or adds one when asked
    _run(w, qtbot)
    assert sum(ly.name.startswith("nuclei") for ly in viewer.layers) == 1
    w.replace_check.setChecked(False)
    _run(w, qtbot)
    assert sum(ly.name.startswith("nuclei") for ly in viewer.layers) == 2


@pytest.mark.slow
def test_default_model_gives_one_colour_per_class(viewer_with_sample, qtbot):
    w = dw.DetectWidget(viewer_with_sample)
    assert w.model_combo.currentText() == w.model_combo.itemText(0)  # the default is preselected
    w.region_combo.setCurrentText(dw.REGION_VIEW)
    _run(w, qtbot, timeout=300_000)
    pts = w.last_layer
    classes = list(pts.features["class"].cat.categories)
    assert len(pts.data) > 50
    colours = {tuple(np.round(c, 3)) for c in pts.face_color}
    used = set(pts.features["class"])
    assert len(colours) == len(used) <= len(classes)


def test_drawn_region_limits_detection(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    image = viewer.layers[0]
    s = 0.499
    viewer.add_shapes([np.array([[100, 100], [100, 400], [300, 400], [300, 100]]) * s], shape_type="polygon", name="roi")
    w = dw.DetectWidget(viewer)
    w.model_combo.setCurrentText("classical")
    w.region_combo.setCurrentText(dw.REGION_SHAPES)
    w.shapes_combo.setCurrentText("roi")
    _run(w, qtbot)
    yx = w.last_layer.data
    assert len(yx) > 20
    assert yx[:, 0].min() >= 99 and yx[:, 0].max() <= 301 and yx[:, 1].min() >= 99 and yx[:, 1].max() <= 401
    assert image in viewer.layers


def test_pixel_size_is_shown_assumed_when_missing_and_editable(make_napari_viewer, data_dir, qtbot):
    """A plain PNG has no µm/px: the dock says it is assumed, the summary states the pixel size
    used, and a value the user types changes the scale of the detection (40x here)."""
    from PIL import Image

    viewer = make_napari_viewer()
    rgb = np.asarray(Image.open(data_dir / "monuseg" / "train" / "images" / "TCGA-21-5784-01Z-00-DX1.png").convert("RGB"))
    viewer.add_image(rgb[:400, :400], name="png", rgb=True)
    w = dw.DetectWidget(viewer)
    w.model_combo.setCurrentText("classical")
    w.region_combo.setCurrentText(dw.REGION_WHOLE)
    assert "assumed" in w.pixel_size.note.text() and w.pixel_size.override() is None
    _run(w, qtbot)
    assert w.last_result.mpp_source == "assumed" and "assumed" in w.summary.text()
    n_assumed = len(w.last_result)
    w.pixel_size.spin.setValue(0.25)  # the user knows it is 40x
    assert w.pixel_size.override() == 0.25 and "set by you" in w.pixel_size.note.text()
    _run(w, qtbot)
    r = w.last_result
    assert r.mpp == 0.25 and r.mpp_source == "given" and "0.25 µm/px (given)" in w.summary.text()
    assert r.n_tiles >= 1 and len(r) != n_assumed  # the detector saw the image at its own scale
    assert w.last_layer.metadata["mpp"] == 0.25


def test_cancel_a_running_detection(make_napari_viewer, mosaic_slide, qtbot):
    viewer = make_napari_viewer()
    viewer.open(str(mosaic_slide), plugin="napari-histoai")
    w = dw.DetectWidget(viewer)
    w.model_combo.setCurrentText("classical")
    seen, totals = [], []
    worker = w.start()
    worker.yielded.connect(lambda p: (seen.append(p.done), totals.append(p.total)))
    qtbot.waitUntil(lambda: any(d > 0 for d in seen), timeout=60_000)
    assert w.panel.cancel_btn.isEnabled()
    w.panel.cancel_btn.click()
    qtbot.waitUntil(lambda: not w.panel.running, timeout=60_000)
    assert w.last_layer is None and not any(ly.name.startswith("nuclei") for ly in viewer.layers)
    assert w.panel.status.text() == "Cancelled" and w.detect_btn.isEnabled()
    assert max(totals) > 100 and max(seen) < max(totals) / 2  # stopped long before the end


def test_fast_box_detects_with_the_dense_head_alone(viewer_with_sample, qtbot, monkeypatch):
    """The 'Fast' box: the default model's dense head alone on a drawn region gives classified
    nuclei; with the classical detector it is one notification, not a crash."""
    viewer = viewer_with_sample
    s = 0.499
    viewer.add_shapes([np.array([[0, 0], [0, 400], [400, 400], [400, 0]]) * s], shape_type="polygon", name="roi")
    w = dw.DetectWidget(viewer)
    w.region_combo.setCurrentText(dw.REGION_SHAPES)
    w.shapes_combo.setCurrentText("roi")
    w.fast_check.setChecked(True)
    _run(w, qtbot)
    pts = w.last_layer
    assert len(pts.data) > 20 and set(pts.features["class"]) <= {"epithelial", "inflammatory", "fibroblast", "others"}
    assert len(set(pts.features["class"])) >= 2
    msgs = []
    monkeypatch.setattr("napari_histoai.widgets._runner.notify_error", msgs.append)
    w.model_combo.setCurrentText("classical")
    w.panel.sync = True
    w.start()
    assert len(msgs) == 1 and "fast mode" in msgs[0] and w.detect_btn.isEnabled()


def test_test_time_flips_box_detects_a_drawn_region(viewer_with_sample, qtbot):
    """The 'Test-time flips' box: the default model averaged over 4 flips of each tile gives
    classified nuclei in the drawn region, about as many as without it and not the same points."""
    viewer = viewer_with_sample
    s = 0.499
    box = np.array([[512, 256], [512, 556], [812, 556], [812, 256]])  # cellular (the top-left is glass)
    viewer.add_shapes([box * s], shape_type="polygon", name="roi")
    w = dw.DetectWidget(viewer)
    w.region_combo.setCurrentText(dw.REGION_SHAPES)
    w.shapes_combo.setCurrentText("roi")
    _run(w, qtbot)
    plain = np.asarray(w.last_layer.data).copy()
    w.tta_check.setChecked(True)
    _run(w, qtbot)
    pts = w.last_layer
    assert len(pts.data) > 20 and abs(len(pts.data) - len(plain)) < 0.15 * len(plain)
    assert set(pts.features["class"]) <= {"epithelial", "inflammatory", "fibroblast", "others"}
    assert len(pts.data) != len(plain) or not np.allclose(np.asarray(pts.data), plain)


def test_errors_are_one_notification_not_a_crash(make_napari_viewer, monkeypatch):
    msgs = []
    monkeypatch.setattr(dw, "notify_error", msgs.append)
    viewer = make_napari_viewer()
    w = dw.DetectWidget(viewer)
    assert w.start() is None
    assert len(msgs) == 1 and "open an image first" in msgs[0]
    viewer.add_image(np.zeros((64, 64), np.uint16), name="fluo")
    w.model_combo.setCurrentText("classical")
    w.panel.sync = True
    monkeypatch.setattr("napari_histoai.widgets._runner.notify_error", msgs.append)
    w.start()
    assert "RGB" in msgs[-1] and w.last_layer is None and w.detect_btn.isEnabled()


def test_sample_data_and_writers_through_napari(make_napari_viewer, tmp_path, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-histoai", "he_sample")
    assert viewer.layers[0].multiscale
    w = dw.DetectWidget(viewer)
    w.model_combo.setCurrentText("classical")
    w.panel.sync = True
    w.start()
    layer = w.last_layer
    csv_path = tmp_path / "nuclei.csv"
    layer.save(str(csv_path), plugin="napari-histoai")
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("y,x,class,score") and len(lines) == len(layer.data) + 1
    gj = tmp_path / "nuclei.geojson"
    layer.save(str(gj), plugin="napari-histoai")
    assert '"FeatureCollection"' in gj.read_text()


def test_models_saved_from_a_worker_thread_appear_in_the_selector(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import threading

    import torch

    from napari_histoai import models

    monkeypatch.setenv("HISTOAI_MODELS", str(tmp_path))
    w = dw.DetectWidget(make_napari_viewer())
    # a (fake-architecture) detector saved by a background thread, as the training dock does
    t = threading.Thread(target=models.save_checkpoint, args=(tmp_path / "from-thread", torch.nn.Linear(2, 2).state_dict(),
                                                              {"kind": "acformer-detector"}))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: "from-thread" in [w.model_combo.itemText(i) for i in range(w.model_combo.count())], timeout=5000)
