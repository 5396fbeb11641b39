"""The 'Correct nuclei and train' dock in a real napari viewer (Xvfb via pytest-xvfb)."""

import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_histoai.widgets import correct_widget as cw  # noqa: E402

from .test_mixed_train import synthetic, tiny_model  # noqa: E402


@pytest.fixture
def image_file(tmp_path):
    import tifffile

    im, pts, cls, rev, neg = synthetic(0)
    path = tmp_path / "syn.tif"
    tifffile.imwrite(path, im, photometric="rgb")
    return path, pts, cls, rev, neg


def _open(viewer, path):
    viewer.open(str(path), plugin="napari-histoai")
    return viewer.layers[-1]


def test_correct_autosave_train_and_restore(make_napari_viewer, qtbot, image_file):
    from napari_histoai.project import Project
    from napari_histoai.widgets.detect_widget import DetectWidget

    path, pts, cls, rev, neg = image_file
    tiny_model()
    viewer = make_napari_viewer()
    _open(viewer, path)
    detect = DetectWidget(viewer)
    w = cw.CorrectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.train.model_combo.setCurrentText("tiny-start")
    layer = w.attach()
    assert layer.name == cw.POINTS_NAME and len(layer.data) == 0
    assert set(w.region_layers) == {"reviewed", "no_target"}
    image = viewer.layers[0]  # the plugin's layers sit on the image: same units, no unit warnings
    assert all(tuple(ly.units) == tuple(image.units) for ly in viewer.layers)
    assert "assumed" in w.pixel_size.note.text() and w.pixel_size.override() is None  # a TIFF without µm/px
    assert [w.palette.buttons[c].text()[0] for c in w.palette.classes] == ["1", "2", "3", "4"]
    # the user adds points (class from the palette, source user), re-classes two, moves one
    w.set_class("epithelial")
    layer.add(pts[:10])
    assert (layer.features["source"] == "user").all() and (layer.features["class"] == "epithelial").all()
    layer.selected_data = {1, 3}
    layer.keymap  # noqa: B018 - the hotkeys are bound on the layer
    w.set_class("inflammatory")
    assert w.counts() == {"epithelial": 8, "inflammatory": 2, "fibroblast": 0, "others": 0}
    assert w.palette.counts["inflammatory"].text() == "2"
    layer.selected_data = {0}
    layer.remove_selected()
    assert w.palette.counts["epithelial"].text() == "7"
    layer.add(pts[10:])
    w.region_layers["reviewed"].add_polygons([rev[0]])
    w.region_layers["no_target"].add_polygons([neg[0]])
    # debounced autosave (about 1 s)
    project = Project.for_image(path)
    qtbot.waitUntil(lambda: project.points_path.exists() and len(project.load_regions()["no_target"]) == 1, timeout=5000)
    assert len(project.load_points()) == len(pts) - 1
    # export with the foundation writers
    out = w.export_points(str(path.parent / "export.geojson"))
    assert '"FeatureCollection"' in open(out).read()
    # train a few steps; the new model appears in the Detect dock's selector
    w.train.name_edit.setText("my-corrections")
    w.train.rounds.setValue(1)
    w.train.steps.setValue(2)
    w.train.views_combo.setCurrentText("Random crops")
    w.train.panel.sync = True
    w.train.start()
    assert w.train.last_summary is not None, w.train.panel.last_error
    assert "Saved model 'my-corrections'" in w.train.result.text()
    # the dock says when the held-out reviewed blocks kept the start weights (round 0)
    kept = w.train.last_summary["selected_round"] == 0
    assert ("did not beat the start model" in w.train.result.text()) == kept
    s = w.train.last_summary  # and when the operating threshold moved with it
    assert ("Score threshold" in w.train.result.text()) == (s["threshold"] != s["threshold_before"])
    assert len(w.train.plot.series["loss"]) == 2
    assert w.train.model_combo.currentText() == "my-corrections"
    assert Project.for_image(path).meta["models"][-1]["name"] == "my-corrections"
    # re-opening the image restores the corrections and the regions
    n = len(layer.data)
    viewer.layers.clear()  # closing layers must not erase the saved work
    w.close_project()
    w2 = cw.CorrectWidget(viewer)
    _open(viewer, path)
    qtbot.waitUntil(lambda: w2.points_layer is not None, timeout=5000)
    assert len(w2.points_layer.data) == n and w2.counts()["inflammatory"] == 2
    assert len(w2.region_layers["reviewed"].data) == 1 and len(w2.region_layers["no_target"].data) == 1
    # the Detect dock offers the new model
    def detect_models():
        return [detect.model_combo.itemText(i) for i in range(detect.model_combo.count())]

    qtbot.waitUntil(lambda: "my-corrections" in detect_models(), timeout=5000)


def test_hotkeys_change_the_class_of_selected_points(make_napari_viewer, image_file):
    path, pts, *_ = image_file
    viewer = make_napari_viewer()
    _open(viewer, path)
    w = cw.CorrectWidget(viewer)
    layer = w.attach()
    layer.add(pts[:3])
    layer.selected_data = {2}
    viewer.layers.selection.active = layer
    layer.mode = "select"
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    handler.press_key("3")
    handler.release_key("3")
    assert layer.features["class"].tolist()[2] == w.palette.classes[2] and len(layer.data) == 3
    assert w.palette.current == w.palette.classes[2]
    handler.press_key("1")  # napari's own '1' (delete selected points) is overridden on this layer
    handler.release_key("1")
    assert layer.features["class"].tolist()[2] == w.palette.classes[0] and len(layer.data) == 3


def test_cancel_training_keeps_the_previous_model(make_napari_viewer, qtbot, image_file):
    from napari_histoai.models import list_models

    path, pts, cls, rev, neg = image_file
    tiny_model()
    viewer = make_napari_viewer()
    _open(viewer, path)
    w = cw.CorrectWidget(viewer)
    w.train.model_combo.setCurrentText("tiny-start")
    layer = w.attach()
    layer.add(pts)
    w.region_layers["reviewed"].add_polygons([rev[0]])
    w.train.name_edit.setText("never-saved")
    w.train.steps.setValue(500)
    w.train.views_combo.setCurrentText("Random crops")
    seen = []
    worker = w.train.start()
    worker.yielded.connect(lambda p: seen.append(p))
    qtbot.waitUntil(lambda: any("loss" in p.info for p in seen), timeout=60_000)
    w.train.panel.cancel_btn.click()
    qtbot.waitUntil(lambda: not w.train.panel.running, timeout=60_000)
    assert w.train.panel.status.text() == "Cancelled" and w.train.train_btn.isEnabled()
    assert "never-saved" not in list_models() and w.train.model_combo.currentText() == "tiny-start"


def test_train_section_defaults_to_confident_pseudo_labels(make_napari_viewer):
    """The dock trains as the simulated user measured best (pseudo labels at T 0.4, R 4:1:1);
    T at its special value "model's threshold" means the start model's threshold (None)."""
    w = cw.CorrectWidget(make_napari_viewer())
    m = w.train.config()
    assert m.pseudo and m.T == 0.4 and tuple(m.ratio) == (4, 1, 1)
    w.train.T.setValue(0.0)
    assert w.train.T.text() == "model's threshold" and w.train.config().T is None
