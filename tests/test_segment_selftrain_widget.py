"""The 'Segment nuclei' dock's default method, the self-trained U-Net, in a real napari viewer
with the bundled sample (runs under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

TINY = {"crop": 64, "widths": (8, 16, 32), "tta": False}
BOX = (384, 384, 640, 640)  # y0, x0, y1, x1 level-0 px of tissue in the sample


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (fixture in conftest)."""


def make_dock(make_napari_viewer, sample_path, steps=60):
    from napari_histoai.widgets import segment_widget as sw

    viewer = make_napari_viewer()
    viewer.open(str(sample_path), plugin="napari-histoai")
    image = viewer.layers[-1]
    corners = np.array([[BOX[0], BOX[1]], [BOX[0], BOX[3] - 1], [BOX[2] - 1, BOX[3] - 1], [BOX[2] - 1, BOX[1]]], float)
    viewer.add_shapes([np.array([image.data_to_world(c) for c in corners])], shape_type="rectangle", name="region",
                      units=image.units)
    w = sw.SegmentWidget(viewer)
    w.image_combo.setCurrentText(image.name)
    w.region_combo.setCurrentText(sw.REGION_SHAPES)
    w.shapes_combo.setCurrentText("region")
    w.device_combo.setCurrentText("cpu")
    st = w.selftrain
    st.panel.sync = True
    st.steps_spin.setValue(steps)
    st.extra_config = dict(TINY)
    return viewer, image, w


@pytest.mark.gui
def test_default_method_trains_segments_saves_and_reuses(make_napari_viewer, sample_path):
    from napari_histoai.widgets import segment_widget as sw
    from napari_histoai.widgets._segment_selftrain import NEW_MODEL

    viewer, image, w = make_dock(make_napari_viewer, sample_path)
    st = w.selftrain
    # the self-trained U-Net is the default; the contrastive controls are hidden until chosen
    assert w.method_combo.currentText() == sw.METHOD_SELFTRAIN
    assert not st.isHidden() and w.contrastive_box.isHidden()
    assert st.model_combo.currentText() == NEW_MODEL and not st.save_btn.isEnabled()
    n_layers = len(viewer.layers)
    st.start()
    assert st.labels_layer is not None, st.panel.last_error
    lab = st.labels_layer
    assert len(viewer.layers) == n_layers + 1 and lab in viewer.layers
    assert lab.data.shape == (256, 256) and int(np.asarray(lab.data).max()) > 50
    assert tuple(lab.scale) == pytest.approx(tuple(image.scale[-2:]))
    assert tuple(lab.translate) == pytest.approx(tuple(np.asarray(image.scale[-2:]) * BOX[:2]))
    assert st.plot.series["loss"], "the loss plot shows the training"
    assert "nuclei at 0.499 µm/px" in st.summary.text() and "trained 60 steps" in st.summary.text()
    # the new model is not an input of the dock
    assert lab.name not in [w.image_combo.itemText(i) for i in range(w.image_combo.count())]

    # save under a name: offered in the list and selected; applying it gives the same labels
    first = np.asarray(lab.data).copy()
    st.name_edit.setText("my-selftrained")
    path = st.save_model()
    assert path is not None and (path / "config.json").is_file()
    assert st.model_combo.currentText() == "my-selftrained" and not st.steps_spin.isEnabled()
    st.start()
    assert st.labels_layer is not lab and lab not in viewer.layers  # replaced
    assert np.array_equal(np.asarray(st.labels_layer.data), first)
    assert "model my-selftrained" in st.summary.text()

    # the contrastive 'Load model…' hands a self-trained model folder to its own section
    w.method_combo.setCurrentText(sw.METHOD_CONTRASTIVE)
    assert not w.contrastive_box.isHidden() and st.isHidden()
    st.model_combo.setCurrentText(NEW_MODEL)
    assert w.load_model(str(path)) == "my-selftrained"
    assert w.method_combo.currentText() == sw.METHOD_SELFTRAIN and st.model_combo.currentText() == "my-selftrained"


@pytest.mark.gui
def test_cancel_mid_training_adds_no_layer(make_napari_viewer, sample_path):
    viewer, image, w = make_dock(make_napari_viewer, sample_path, steps=500)
    st = w.selftrain
    seen = []

    def progress(p):
        seen.append(p.done)
        if p.done >= 11:
            st.panel.cancel()

    st._progress = progress
    n_layers = len(viewer.layers)
    st.start()
    assert st.labels_layer is None and st.model is None and len(viewer.layers) == n_layers
    assert max(seen) <= 21
    assert st.panel.status.text() == "Cancelled"
    assert st.run_btn.isEnabled() and not st.panel.running


@pytest.mark.gui
def test_errors_are_notified_not_raised(make_napari_viewer, sample_path, monkeypatch):
    from napari_histoai.widgets import _segment_selftrain as sts

    msgs = []
    monkeypatch.setattr(sts, "notify_error", msgs.append)
    viewer, image, w = make_dock(make_napari_viewer, sample_path)
    st = w.selftrain
    assert st.save_model("x") is None  # nothing trained yet
    w.shapes_combo.clear()  # no Shapes layer chosen
    viewer.layers.remove("region")
    st.start()
    assert len(msgs) == 2 and st.labels_layer is None
    assert "train a model first" in msgs[0] and "Shapes layer" in msgs[1]
