"""The 'Segment nuclei (self-supervised)' dock in a real napari viewer (runs under Xvfb)."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from .conftest import DATA  # noqa: E402  (honours $HISTOAI_DATA)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (fixture in conftest)."""


def he_crop(size=160):
    p = DATA / "monuseg" / "train" / "images" / "TCGA-21-5784-01Z-00-DX1.png"
    if not p.exists():
        pytest.skip("MoNuSeg data not available")
    from skimage.io import imread

    return imread(p)[300:300 + size, 300:300 + size, :3]


def make_widget(make_napari_viewer):
    from napari_histoai.widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(he_crop(), name="he", rgb=True, scale=(0.25, 0.25), units=("µm", "µm"))
    w = SegmentWidget(viewer)
    w.panel.sync = True
    w.k_spin.setValue(3)
    w.patch_spin.setValue(32)
    w.steps_spin.setValue(4)
    w.restarts_spin.setValue(1)
    w.device_combo.setCurrentText("cpu")
    return viewer, layer, w


@pytest.mark.gui
def test_train_few_steps_then_make_labels(make_napari_viewer, tmp_path):
    viewer, layer, w = make_widget(make_napari_viewer)
    assert w.image_combo.currentText() == "he"
    assert not w.labels_btn.isEnabled()
    updates = []
    orig = w._progress
    w._progress = lambda p: (updates.append(p), orig(p))
    w.train()
    assert w.result is not None and w.model is not None, w.panel.last_error
    assert len(w.conf_layers) == 3
    assert all(ly.data.shape == (160, 160) for ly in w.conf_layers)
    assert tuple(w.conf_layers[0].scale) == (0.25, 0.25)
    assert w.channel_combo.count() == 3 and w.channel_combo.currentIndex() == w.result.channel
    assert sum(ly.visible for ly in w.conf_layers) == 1
    assert any("confidence" in p.info for p in updates)
    assert w.labels_btn.isEnabled()
    # the confidence layers are not offered as training images
    assert [w.image_combo.itemText(i) for i in range(w.image_combo.count())] == ["he"]

    assert w.auto_check.isChecked() and w.threshold() == "auto" and not w.thr_slider.isEnabled()
    t = w.auto_threshold()
    assert 0 < t < 1 and w.thr_slider.value() == int(round(min(0.99, max(0.01, t)) * 100))
    w.auto_check.setChecked(False)
    w.thr_slider.setValue(40)
    assert w.thr_label.text() == "0.40" and w.threshold() == 0.4
    w.make_labels()
    lab = w.labels_layer
    assert lab is not None and lab in viewer.layers
    assert lab.data.shape == (160, 160) and lab.data.dtype == np.uint32
    assert tuple(lab.scale) == (0.25, 0.25)
    # every layer the dock added carries the image's units: napari can render in µm (no
    # "Inconsistent units across layers" warning on every confidence update)
    assert all(tuple(str(u) for u in ly.units) == tuple(str(u) for u in layer.units) for ly in w.conf_layers + [lab])
    assert viewer.layers.extent.units is not None
    assert "0.25 µm/px" in w.summary.text()

    # whole-slide sized labels live in a temporary zarr store, which goes with its layer
    import napari_histoai.engine.inference as E

    E_max, E.IN_MEMORY_MAX_PIXELS = E.IN_MEMORY_MAX_PIXELS, 1000
    try:
        w.make_labels()
    finally:
        E.IN_MEMORY_MAX_PIXELS = E_max
    store = Path(w.labels_layer.metadata["histoai_store"])
    assert store.is_dir() and int(np.asarray(w.labels_layer.data[:]).max()) > 0
    viewer.layers.remove(w.labels_layer)
    assert not store.exists()

    # save, load, apply to another image
    path = w.save_model(str(tmp_path / "segmenter"))
    assert (Path(path) / "config.json").exists()
    viewer.add_image(he_crop(120), name="other", rgb=True, units=("µm", "µm"))
    w.image_combo.setCurrentText("other")
    assert w.load_model(str(path)) is not None
    assert w.threshold() == 0.4
    w.make_labels()
    assert w.labels_layer.data.shape == (120, 120)


@pytest.mark.gui
def test_cancel_mid_training(make_napari_viewer):
    viewer, layer, w = make_widget(make_napari_viewer)
    w.steps_spin.setValue(50)
    seen = []

    def progress(p):
        seen.append(p.done)
        if p.done == 2:
            w.panel.cancel()

    w._progress = progress
    w.train()
    assert w.result is None and w.model is None
    assert max(seen) <= 3
    assert w.panel.status.text() == "Cancelled"
    assert w.train_btn.isEnabled() and not w.panel.running


@pytest.mark.gui
def test_errors_are_notified_not_raised(make_napari_viewer, monkeypatch):
    from napari_histoai.widgets import segment_widget as sw

    msgs = []
    monkeypatch.setattr(sw, "notify_error", msgs.append)
    viewer, layer, w = make_widget(make_napari_viewer)
    w.make_labels()  # no model yet
    w.region_combo.setCurrentText(sw.REGION_SHAPES)
    w.train()  # no shapes layer
    assert len(msgs) == 2 and w.result is None
