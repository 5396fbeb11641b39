"""The 'Adapt from fluorescence' dock in a real napari viewer (under Xvfb): segment nuclei
instances of a region of the sample with an adapted model; adapt a tiny model from the bundled
fluorescence set to an open H&E image (saved, offered and selected); Cancel never touches a saved
model; a bad source is refused with one line and nothing is saved."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_histoai.bundled import sample_path  # noqa: E402
from napari_histoai.models import user_models_dir  # noqa: E402

TINY = dict(crop=64, gan_crop=32, warmup=1)  # with steps=2, gan_steps=2: seconds on one CPU thread
S = 0.499  # µm/px of the sample


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (fixture in conftest)."""


def open_sample(viewer):
    viewer.open(str(sample_path()), plugin="napari-histoai")
    return viewer.layers[-1]


def make_widget(viewer, sync=True):
    from napari_histoai.widgets.adapt_widget import AdaptWidget

    w = AdaptWidget(viewer)
    viewer.window.add_dock_widget(w, name="Adapt from fluorescence")
    w.device_combo.setCurrentText("cpu")
    w.segment.panel.sync = w.train.panel.sync = sync
    t = w.train
    t.steps_spin.setValue(2)
    t.gan_steps_spin.setValue(2)
    t.extra_config = dict(TINY)
    return w


def save_tiny_model(name="tiny"):
    """An untrained compact model (what the dock runs does not depend on training)."""
    from napari_histoai.methods.adaptation import preset, save_adapted_model
    from napari_histoai.methods.adaptation.network import build

    cfg = preset("compact")
    return save_adapted_model(build(cfg.arch), cfg, user_models_dir() / name)


def test_segment_a_drawn_region_into_instance_labels(make_napari_viewer):
    from napari_histoai.methods.adaptation import BUNDLED, KIND
    from napari_histoai.models import list_models
    from napari_histoai.widgets._adapt_segment import REGION_SHAPES

    viewer = make_napari_viewer()
    image = open_sample(viewer)
    image.translate = (10.0, 20.0)
    save_tiny_model("tiny")
    # a 256 x 256 px rectangle at (300, 400) px, drawn in world µm
    y0, x0 = 300, 400
    corners = np.array([[y0, x0], [y0, x0 + 255], [y0 + 255, x0 + 255], [y0 + 255, x0]], float) * S + (10.0, 20.0)
    viewer.add_shapes([corners], shape_type="rectangle", name="roi", units=image.units)
    w = make_widget(viewer)
    seg = w.segment
    names = [seg.model_combo.itemText(i) for i in range(seg.model_combo.count())]
    assert "tiny" in names
    if BUNDLED in list_models(KIND):
        assert names[0] == BUNDLED  # the bundled model is the default
    seg.model_combo.setCurrentText("tiny")
    seg.region_combo.setCurrentText(REGION_SHAPES)
    seg.shapes_combo.setCurrentText("roi")
    assert seg.image_combo.currentText() == image.name
    seg.start()
    res = seg.last_result
    assert res is not None, seg.panel.last_error
    lab = seg.labels_layer
    assert lab in viewer.layers and lab.name == f"{image.name} instances"
    assert lab.data.shape == (256, 256) and np.issubdtype(lab.data.dtype, np.integer)
    np.testing.assert_allclose(lab.scale, image.scale)
    # the labels' first pixel sits on image pixel (300, 400) in the world
    np.testing.assert_allclose(lab.data_to_world((0, 0)), image.data_to_world((y0, x0)), atol=1e-6)
    assert tuple(str(u) for u in lab.units) == tuple(str(u) for u in image.units)
    assert "0.499 µm/px" in seg.summary.text() and seg.panel.status.text() == "Done"
    # a second run replaces the layer; our output is not offered as an input image
    seg.start()
    assert sum(ly.name.endswith(" instances") for ly in viewer.layers) == 1
    assert [seg.image_combo.itemText(i) for i in range(seg.image_combo.count())] == [image.name]


def test_train_from_bundled_fluorescence_saves_and_selects(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = open_sample(viewer)
    w = make_widget(viewer, sync=False)
    t = w.train
    assert t.source.mode_combo.currentText().startswith("Bundled")
    assert t.target.checked() == [image.name]  # an open RGB image is ticked as the target
    t.name_edit.setText("mine")
    seen = []
    orig = t._progress
    t._progress = lambda p: (seen.append(p), orig(p))
    t.train_btn.click()  # as the user does: the job runs in a worker thread
    assert t.panel.running and not t.train_btn.isEnabled()
    qtbot.waitUntil(lambda: not t.panel.running, timeout=120_000)
    assert t.summary is not None, t.panel.last_error
    folder = user_models_dir() / "mine"
    assert (folder / "config.json").is_file() and (folder / "weights.safetensors").is_file()
    assert t.summary["n_sources"] == 10 and t.summary["n_targets"] == 1
    assert "Saved model 'mine'" in t.result.text() and t.train_btn.isEnabled()
    stages = [(p.info or {}).get("stage") for p in seen]
    assert {"cyclegan", "synthesis", "maskrcnn"} <= set(stages)
    assert len(t.plots["cyclegan"].series["G"]) == 2 and len(t.plots["maskrcnn"].series["mask"]) == 2
    assert not any(k.startswith("w_") for k in t.plots["maskrcnn"].series)  # TR weights are not losses
    assert t.preview.isVisibleTo(t) and t.preview.n_shown >= 1
    # the model list refreshed itself and picked the new model
    assert w.segment.model_combo.currentText() == "mine"
    assert t.name_edit.text().startswith("cycpdam-")


def test_cancel_leaves_the_previous_model_alone(make_napari_viewer):
    viewer = make_napari_viewer()
    open_sample(viewer)
    w = make_widget(viewer)
    t = w.train
    t.steps_spin.setValue(50)
    old = user_models_dir() / "tiny"
    old.mkdir(parents=True)
    (old / "config.json").write_text('{"kind": "cycpdam-segmenter"}')
    (old / "weights.safetensors").write_bytes(b"previous weights")
    seen = []

    def progress(p):
        seen.append(p)
        if (p.info or {}).get("stage") == "maskrcnn":
            t.panel.cancel()

    t._progress = progress
    t.name_edit.setText("tiny")
    t.start()
    assert t.panel.status.text() == "Cancelled" and t.summary is None
    assert t.train_btn.isEnabled() and not t.panel.running
    assert sum((p.info or {}).get("stage") == "maskrcnn" for p in seen) == 1
    assert (old / "weights.safetensors").read_bytes() == b"previous weights"
    assert sorted(p.name for p in user_models_dir().iterdir()) == ["tiny"]


def test_bad_source_is_refused_with_one_line(make_napari_viewer, monkeypatch):
    from napari_histoai.widgets import _adapt_train
    from napari_histoai.widgets._adapt_sources import SRC_FOLDER, SRC_LAYERS

    errors = []
    monkeypatch.setattr(_adapt_train, "notify_error", errors.append)
    viewer = make_napari_viewer()
    image = open_sample(viewer)
    labels = viewer.add_labels(np.zeros(image.data[0].shape[:2], np.int32), name="masks", scale=image.scale,
                               units=image.units)
    w = make_widget(viewer)
    t = w.train
    t.source.mode_combo.setCurrentText(SRC_LAYERS)
    assert t.start() is None and "Add pair" in errors[-1]
    t.source.add_pair(image.name, labels.name)  # a colour H&E image posing as fluorescence
    t.name_edit.setText("bad")
    assert t.start() is None
    assert len(errors) == 2 and "colour RGB" in errors[-1] and "\n" not in errors[-1]
    assert not t.panel.running and t.train_btn.isEnabled()
    # a folder pair that does not exist: refused in the worker, one line, nothing saved
    t.source.mode_combo.setCurrentText(SRC_FOLDER)
    t.source.images_edit.setText("/nonexistent/images")
    t.source.masks_edit.setText("/nonexistent/masks")
    t.start()
    assert "does not exist" in t.panel.last_error and t.train_btn.isEnabled()
    assert not user_models_dir().exists() or not any(user_models_dir().iterdir())
