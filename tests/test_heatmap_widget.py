"""The 'Tumour heatmap' dock in a real napari viewer (under Xvfb via pytest-xvfb): train a tiny
model from labelled slides (a folder + CSV, and an open slide labelled in the dock with its
tumour region drawn in a Shapes layer), get a slide's heatmap aligned in µm, its score and the
top-K boxes; Cancel never touches a saved model."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_histoai.io.regions import write_polygons  # noqa: E402
from napari_histoai.io.writers import write_pyramid_ometiff  # noqa: E402
from napari_histoai.models import user_models_dir  # noqa: E402

MPP, SIZE, TILE, MARGIN = 0.5, 1024, 224, 64
TUMOUR_CELL = {"s0": (0, 0), "s1": (1, 1)}  # 2 x 2 blocks of tiles: which block is tumour
QUICK = dict(init_steps=40, round_steps=4, stage2_epochs=2, batch=8)  # ~15 s on one CPU thread


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (fixture in conftest)."""


def tumour_box(stem):
    """(y0, x0, y1, x1) level-0 px of the tumour block of a slide."""
    by, bx = TUMOUR_CELL[stem]
    y0, x0 = MARGIN + by * 2 * TILE, MARGIN + bx * 2 * TILE
    return y0, x0, y0 + 2 * TILE, x0 + 2 * TILE


@pytest.fixture(scope="module")
def slides(data_dir, tmp_path_factory):
    """Four 1024 x 1024 px OME-TIFFs at 0.5 µm/px of real 224 px tiles on glass: s0, s1 with a
    2 x 2 block of TUM tiles, s2, s3 of NORM / STR / LYM / MUS tiles only."""
    from PIL import Image

    src = data_dir / "tissue_tiles" / "images"

    def tiles(*kinds):
        return [np.asarray(Image.open(p).convert("RGB"))[:TILE, :TILE] for k in kinds
                for p in sorted(src.glob(f"{k}-*.png"))]

    tum, other = tiles("TUM"), tiles("NORM", "STR", "LYM", "MUS")
    if not tum or not other:
        pytest.skip("tissue_tiles not available")
    root = tmp_path_factory.mktemp("heatmap")
    folder = root / "slides"
    folder.mkdir()
    for i, stem in enumerate(("s0", "s1", "s2", "s3")):
        rng = np.random.default_rng(i)
        im = np.full((SIZE, SIZE, 3), 240, np.uint8)
        for r in range(4):
            for c in range(4):
                pool = tum if (r // 2, c // 2) == TUMOUR_CELL.get(stem) else other
                im[MARGIN + r * TILE:MARGIN + (r + 1) * TILE, MARGIN + c * TILE:MARGIN + (c + 1) * TILE] = \
                    pool[rng.integers(len(pool))]
        write_pyramid_ometiff(folder / f"{stem}.ome.tif", im, mpp=MPP)
    # s0 is labelled in the dock (CSV without it); slides/labels_all.csv + annotations/ label and draw it
    (root / "labels.csv").write_text("slide,label\ns1.ome.tif,tumour\ns2.ome.tif,normal\ns3.ome.tif,normal\n")
    (folder / "labels_all.csv").write_text("slide,label\ns0.ome.tif,tumour\ns2.ome.tif,normal\n")
    (root / "annotations").mkdir()
    y0, x0, y1, x1 = tumour_box("s0")
    write_polygons(root / "annotations" / "s0.geojson", [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)])
    return root


def open_slide(viewer, slides, stem):
    viewer.open(str(slides / "slides" / f"{stem}.ome.tif"), plugin="napari-histoai")
    return viewer.layers[f"{stem}.ome.tif"]


def make_widget(viewer):
    from napari_histoai.widgets.heatmap_widget import HeatmapWidget

    w = HeatmapWidget(viewer)
    viewer.window.add_dock_widget(w, name="Tumour heatmap")
    w.device_combo.setCurrentText("cpu")
    w.train.rounds_spin.setValue(1)
    w.train.extra_config = dict(QUICK)
    return w


def world(layer, yx):
    return np.asarray(layer.data_to_world(np.asarray(yx, float)))[-2:]


@pytest.mark.slow
def test_train_then_heatmap_score_and_top_patches(make_napari_viewer, qtbot, slides, monkeypatch):
    viewer = make_napari_viewer()
    open_slide(viewer, slides, "s0")
    y0, x0, y1, x1 = tumour_box("s0")
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float) * MPP  # world µm
    viewer.add_shapes([corners], shape_type="rectangle", name="tumour s0")
    w = make_widget(viewer)
    t = w.train
    t.folder_edit.setText(str(slides / "slides"))
    t.labels_edit.setText(str(slides / "labels.csv"))
    t.table.set_choice("s0.ome.tif", "tumour", "tumour s0")
    t.name_edit.setText("tiny")
    # the drawn rectangle becomes a level-0 px polygon of s0 (µm -> px; pixel corners at integers)
    (ts,) = t.table.training_slides()
    assert ts.label == 1 and Path(ts.path).name == "s0.ome.tif" and len(ts.regions) == 1
    np.testing.assert_allclose(ts.regions[0].min(0), (y0 + 0.5, x0 + 0.5))
    np.testing.assert_allclose(ts.regions[0].max(0), (y1 + 0.5, x1 + 0.5))

    t.train_btn.click()  # as the user does: the job runs in a worker thread
    assert t.panel.running and not t.train_btn.isEnabled()
    qtbot.waitUntil(lambda: not t.panel.running, timeout=180_000)
    assert t.summary is not None, t.panel.last_error
    assert (user_models_dir() / "tiny" / "config.json").is_file()
    res = t.summary["result"]
    assert [r["round"] for r in res.rounds] == [0, 1] and t.summary["n_slides"] == 4
    assert t.summary["n_annotated"] == 1 and t.summary["notes"] == []  # s0: unlabelled in the CSV, labelled here
    assert "Saved model 'tiny'" in t.result.text() and t.train_btn.isEnabled()
    assert len(t.plot.series["stage 1"]) >= 4 and len(t.plot.series["stage 2"]) == 2 and len(t.plot.marks) == 1
    # the model list refreshed itself (signal queued from the worker) and picked the new model
    assert w.model_combo.currentText() == "tiny"
    assert t.name_edit.text().startswith("heatmap-")

    # a slide never labelled for training, shifted in the world: the heatmap follows it
    s1 = open_slide(viewer, slides, "s1")
    s1.translate = (100.0, 50.0)
    w.slide_combo.setCurrentText("s1.ome.tif")
    assert w.pixel_size.override() is None
    assert w.make_heatmap() is not None
    qtbot.waitUntil(lambda: not w.panel.running, timeout=120_000)
    res = w.last_result
    assert res is not None, w.panel.last_error
    hm = w.heatmap_layer
    assert hm in viewer.layers and "inferno" in hm.colormap.name and tuple(hm.contrast_limits) == (0, 1)
    assert tuple(str(u) for u in hm.units) == tuple(str(u) for u in s1.units)
    H, W = hm.data.shape
    assert res.maps.downsample == 8 and (H, W) == (SIZE // 8, SIZE // 8)
    np.testing.assert_allclose(hm.scale, (MPP * 8, MPP * 8))
    # the map's extent in world µm is the slide's: same outer pixel edges
    np.testing.assert_allclose(world(hm, (-0.5, -0.5)), world(s1, (-0.5, -0.5)), atol=1e-6)
    np.testing.assert_allclose(world(hm, (H - 0.5, W - 0.5)), world(s1, (SIZE - 0.5, SIZE - 0.5)), atol=1e-6)
    # s1's tumour block, found through world µm, is the hot part of the map (even this tiny
    # model learnt that: about 0.7 inside, 0.35 elsewhere)
    ty0, tx0, ty1, tx1 = tumour_box("s1")
    (my0, mx0), (my1, mx1) = (np.rint(hm.world_to_data(world(s1, c))[-2:]).astype(int)
                              for c in ((ty0, tx0), (ty1, tx1)))
    assert (my1 - my0, mx1 - mx0) == (2 * TILE // 8, 2 * TILE // 8)
    m = np.asarray(hm.data)
    inside = np.zeros(m.shape, bool)
    inside[my0:my1, mx0:mx1] = True
    assert m[inside].mean() > m[~inside].mean() + 0.1
    # the score, its call and threshold are shown
    assert res.call in w.score_label.text() and f"{res.threshold:.3f}" in w.score_label.text()

    # the top-K boxes: one rectangle per scored patch, inside the slide, with their probabilities
    box = w.topk_layer
    assert len(box.data) == len(res.top_k) >= 2 and set(box.shape_type) == {"rectangle"}
    assert np.allclose(box.features["prob"], [b["prob"] for b in res.top_k])
    lo, hi = world(s1, (-0.5, -0.5)), world(s1, (SIZE - 0.5, SIZE - 0.5))
    for v in box.data:
        wv = np.array([world(box, p) for p in v])
        assert (wv >= lo - 1e-6).all() and (wv <= hi + 1e-6).all()
    assert box.selected_data == {0} and w.next_btn.isEnabled()
    # Next selects the second box and centres the camera on it
    w.next_btn.click()
    b = res.top_k[1]
    centre = world(s1, ((b["y0"] + b["y1"]) / 2 - 0.5, (b["x0"] + b["x1"]) / 2 - 0.5))
    camera = viewer.scene.camera
    np.testing.assert_allclose(camera.center[-2:], centre, atol=1e-6)
    assert box.selected_data == {1} and "patch 2/" in w.box_label.text()
    # zoomed so the box fills half the canvas on its fuller axis
    size = (b["y1"] - b["y0"]) * MPP, (b["x1"] - b["x0"]) * MPP
    assert camera.zoom == pytest.approx(0.5 * min(np.asarray(viewer.canvas.size) / size))
    w.prev_btn.click()
    assert box.selected_data == {0} and "patch 1/" in w.box_label.text()
    # our output layers are not offered as slides to train on or to map
    assert [w.slide_combo.itemText(i) for i in range(w.slide_combo.count())] == ["s0.ome.tif", "s1.ome.tif"]
    # a second run replaces the layers; a whole-slide sized map streamed to a temporary zarr store
    # is shown lazily and its store goes with its layer
    import napari_histoai.engine.inference as E

    w.panel.sync = True
    monkeypatch.setattr(E, "IN_MEMORY_MAX_PIXELS", 1000)
    w.make_heatmap()
    assert sum(ly.name.startswith("tumour heatmap") for ly in viewer.layers) == 1
    assert sum(ly.name.startswith("top patches") for ly in viewer.layers) == 1
    store = Path(w.heatmap_layer.metadata["histoai_store"])
    assert store.is_dir() and w.heatmap_layer.data.shape == (H, W)
    np.testing.assert_allclose(np.asarray(w.heatmap_layer.data), m, atol=1e-6)
    viewer.layers.remove(w.heatmap_layer)
    assert not store.exists()


def test_cancel_leaves_saved_models_alone(make_napari_viewer, slides, tmp_path):
    viewer = make_napari_viewer()
    w = make_widget(viewer)
    t = w.train
    t.panel.sync = True
    t.labels_edit.setText(str(slides / "slides" / "labels_all.csv"))  # no folder: the CSV's
    t.ann_edit.setText(str(slides / "annotations"))  # s0's drawn region: mode 'mixed' accepts the slides
    t.rounds_spin.setValue(0)
    t.extra_config = dict(init_steps=30, stage2_epochs=1, batch=4)
    models = user_models_dir()
    old = models / "tiny"
    old.mkdir(parents=True)
    (old / "config.json").write_text('{"kind": "tumour-heatmap"}')
    (old / "weights.safetensors").write_bytes(b"previous weights")

    def cancel_when(pred):
        orig = t._progress

        def progress(p):
            orig(p)
            if pred(p):
                t.panel.cancel()
        t._progress = progress

    # mid-training, under the name of an existing model: the old model stays as it was
    cancel_when(lambda p: "loss" in (p.info or {}))
    t.name_edit.setText("tiny")
    t.start()
    assert t.panel.status.text() == "Cancelled" and t.summary is None
    assert t.train_btn.isEnabled() and not t.panel.running
    assert (old / "weights.safetensors").read_bytes() == b"previous weights"
    assert sorted(p.name for p in models.iterdir()) == ["tiny"]
    assert len(t.plot.series["stage 1"]) == 1

    # after the last training step, just before saving: nothing is written
    t.extra_config = dict(init_steps=2, stage2_epochs=1, batch=4)
    cancel_when(lambda p: p.message.startswith("saving"))
    t.name_edit.setText("fresh")
    t.start()
    assert t.panel.status.text() == "Cancelled" and t.summary is None
    assert sorted(p.name for p in models.iterdir()) == ["tiny"]
    # the same run, not cancelled, saves it
    t._progress = lambda p: None
    t.start()
    assert t.summary is not None, t.panel.last_error
    assert sorted(p.name for p in models.iterdir()) == ["fresh", "tiny"]
    assert w.model_combo.findText("fresh") >= 0
    # a model folder from elsewhere can be chosen too
    import shutil

    shutil.copytree(models / "fresh", tmp_path / "elsewhere")
    assert w.use_model(str(tmp_path / "elsewhere")) == "elsewhere" and w.model_combo.currentText() == "elsewhere"
    t._done(t.summary)  # a later save refreshes the list: the chosen folder stays offered
    assert w.model_combo.findText("elsewhere") >= 0


def test_refuses_bad_inputs_with_one_line(make_napari_viewer, slides, monkeypatch, tmp_path):
    from napari_histoai.widgets import _heatmap_train, heatmap_widget

    errors = []
    monkeypatch.setattr(_heatmap_train, "notify_error", errors.append)
    monkeypatch.setattr(heatmap_widget, "notify_error", errors.append)
    viewer = make_napari_viewer()
    w = make_widget(viewer)
    assert w.train.start() is None and "label open slides" in errors[-1]
    w.train.panel.sync = True
    w.train.folder_edit.setText(str(slides / "slides"))  # a folder without its labels
    w.train.start()
    assert "labels CSV" in w.train.panel.last_error and w.train.train_btn.isEnabled()
    w.train.folder_edit.setText("")
    w.train.name_edit.setText("bad name!")
    assert w.train.start() is None and "model name" in errors[-1]
    assert w.make_heatmap() is None and "open a slide" in errors[-1]
    open_slide(viewer, slides, "s2")
    assert w.make_heatmap() is None and "train a heatmap model" in errors[-1]
    (tmp_path / "detector").mkdir()
    (tmp_path / "detector" / "config.json").write_text('{"kind": "acformer-detector"}')
    assert w.use_model(str(tmp_path / "detector")) is None and "not a 'tumour-heatmap' model" in errors[-1]
    # an array layer (not from a file) cannot be a training slide
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="array", rgb=True)
    w.train.name_edit.setText("ok")
    w.train.table.set_choice("array", "tumour")
    assert w.train.start() is None and "not opened from a slide file" in errors[-1]
    assert not w.train.panel.running and not w.prev_btn.isEnabled()
