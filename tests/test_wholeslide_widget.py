"""Whole-slide results in a real napari viewer: a million nuclei, level of detail, corrections
through the zoomed-in window reaching the store (Xvfb via pytest-xvfb)."""

import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

CLASSES = ["epithelial", "inflammatory", "fibroblast", "others"]
SHAPE = (100_000, 100_000)


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    from napari_histoai.io.point_store import PointStore

    rng = np.random.default_rng(0)
    n = 1_000_000
    yx = rng.uniform(0, 1, (n, 2)) * (np.array(SHAPE) - 1)
    return PointStore.create(tmp_path_factory.mktemp("ws") / "nuclei.points", yx, rng.integers(0, 4, n), CLASSES,
                             rng.uniform(0.5, 1, n), shape=SHAPE, mpp=0.5)


def _ids_in(store, box):
    return set(store.query(*box).ids.tolist())


def test_pan_zoom_and_correct_through_the_level_of_detail_view(make_napari_viewer, qtbot, big_store, tmp_path):
    from napari_histoai.io.point_store import PointStore
    from napari_histoai.widgets import _lod
    from napari_histoai.widgets.correct_widget import CorrectWidget
    from napari_histoai.widgets.wholeslide_widget import WholeSlideWidget

    viewer = make_napari_viewer()
    cam = viewer.scene.camera
    w = WholeSlideWidget(viewer)
    viewer.window.add_dock_widget(w)
    t0 = time.perf_counter()
    ctl = w.open_store(str(big_store.path))
    assert time.perf_counter() - t0 < 20  # generous: timings live in benchmarks/bench_wholeslide.py
    viewer.reset_view()
    # zoomed out: per-class density layers in µm, no points
    assert ctl.mode == "out" and len(ctl.points_layer.data) == 0
    assert len(ctl.density_layers) == 5 and all(ly.multiscale for ly in ctl.density_layers)
    assert ctl.density_layers[-1].visible and ctl.density_layers[-1].rgb  # all classes in one layer
    ctl.density_layers[1].visible = True  # the user turns on one class (nuclei/mm² values)
    assert ctl.density_layers[0].scale[-1] == pytest.approx(64 * 0.5) and str(ctl.points_layer.units[-1]) == "micrometer"
    slide = {r["class"]: r["count"] for r in w.rows}
    assert slide["all"] == 1_000_000
    # zoom in on a region: the layer holds exactly the store's points of the loaded window
    cam.center = (20_000.0, 30_000.0)  # µm = (40k, 60k) px
    cam.zoom = 0.5
    qtbot.waitUntil(lambda: ctl.mode == "in" and ctl.loaded_box is not None and not ctl.busy, timeout=10_000)
    box, lb = ctl.visible_box(), ctl.loaded_box
    assert lb[0] <= box[0] and lb[1] <= box[1] and lb[2] >= box[2] and lb[3] >= box[3]
    layer = ctl.points_layer
    assert set(layer.features["store_id"].tolist()) == _ids_in(big_store, lb) and len(layer.data) > 100
    assert not any(ly.visible for ly in ctl.density_layers)
    assert not _lod._WARNED  # the swap took the fast path (napari's internals as expected)
    assert ctl.flush() == 0 and PointStore(big_store.path).n_edits == 0  # a swap is not an edit
    mm2 = (64 * 0.5e-3) ** 2
    assert ctl.density_layers[1].data[0].max() * mm2 == pytest.approx(round(ctl.density_layers[1].data[0].max() * mm2))
    # pan: the window follows
    cam.center = (20_000.0, 45_000.0)
    qtbot.waitUntil(lambda: ctl.loaded_box is not None and ctl.loaded_box[3] >= ctl.visible_box()[3] and not ctl.busy,
                    timeout=10_000)
    assert set(layer.features["store_id"].tolist()) == _ids_in(big_store, ctl.loaded_box)
    # a selected point stays selected (by store id) when the window is reloaded around it
    vb = ctl.visible_box()
    ids_now = layer.features["store_id"].to_numpy()
    yx = np.asarray(layer.data)
    target = np.array([(vb[0] + vb[2]) / 2, vb[3]])  # half a view right of the centre
    pick = int(np.argmin(((yx - target) ** 2).sum(1)))
    layer.selected_data = {pick}
    old_box = ctl.loaded_box
    cam.center = (20_000.0, 45_000.0 + 1.5 * (vb[3] - vb[1]) * 0.5)  # 1.5 views right, in µm
    qtbot.waitUntil(lambda: ctl.loaded_box != old_box and not ctl.busy, timeout=10_000)
    new_ids = layer.features["store_id"].to_numpy()
    assert ids_now[pick] in new_ids and [new_ids[i] for i in layer.selected_data] == [ids_now[pick]]
    layer.selected_data = set()
    cam.center = (20_000.0, 45_000.0)
    qtbot.waitUntil(lambda: ctl.loaded_box is not None and ctl.loaded_box[1] <= ctl.visible_box()[1]
                    and ctl.loaded_box[3] >= ctl.visible_box()[3] and not ctl.busy, timeout=10_000)
    # correct through the window with the correction dock: re-class a point (hotkey path), delete one
    cw = CorrectWidget(viewer)
    cw.points_combo.setCurrentText(layer.name)
    cw._adopt(layer)
    ids = layer.features["store_id"].to_numpy()
    layer.selected_data = {0}
    cw.set_class("others")
    layer.selected_data = {1}
    layer.remove_selected()
    layer.add(np.array(layer.data[5]) + 3.0)  # a new nucleus next to another
    t0 = time.perf_counter()
    fresh = lambda: PointStore(big_store.path)  # noqa: E731 - another reader, as after a crash
    qtbot.waitUntil(lambda: fresh().n_edits >= 3, timeout=2000)
    assert time.perf_counter() - t0 < 2.0
    s = fresh()
    assert CLASSES[s.get([ids[0]]).cls[0]] == "others" and s.get([ids[0]]).source[0] == 1
    assert ids[1] not in _ids_in(s, ctl.loaded_box)
    assert len(s) == 1_000_000 and cw.counts()["others"] == slide["others"] + 1
    # the palette's class for new points (no selection: nothing is re-classed)
    layer.selected_data = set()
    cw.set_class("fibroblast")
    # zoom out and back: the corrections are what the store serves
    viewer.reset_view()
    qtbot.waitUntil(lambda: ctl.mode == "out", timeout=5000)
    assert len(layer.data) == 0 and ctl.density_layers[1].visible and ctl.density_layers[-1].visible
    cam.center = (20_000.0, 45_000.0)
    cam.zoom = 0.5
    qtbot.waitUntil(lambda: ctl.mode == "in" and ctl.loaded_box is not None and not ctl.busy, timeout=10_000)
    got = layer.features.set_index("store_id")
    assert got.loc[ids[0], "class"] == "others" and ids[1] not in got.index
    # a new window keeps what the palette chose for new points: they are the user's, of that class
    d = layer.feature_defaults
    assert (d["class"][0], d["source"][0], int(d["store_id"][0])) == ("fibroblast", "user", -1)
    n_edits = fresh().n_edits
    layer.add(np.array(layer.data[7]) + 2.0)  # the dock's counts flush it at once
    qtbot.waitUntil(lambda: fresh().n_edits == n_edits + 1, timeout=2000)
    new = fresh().get([layer.features["store_id"].iloc[-1]])
    assert CLASSES[new.cls[0]] == "fibroblast" and new.source[0] == 1
    # counts in a drawn region, exported with the slide's
    vb = ctl.visible_box()
    rect = np.array([[vb[0], vb[1]], [vb[0], vb[3]], [vb[2], vb[3]], [vb[2], vb[1]]]) * 0.5  # µm
    viewer.add_shapes([rect], shape_type="polygon", name="tumour")
    w.refresh_layers()
    w.shapes_combo.setCurrentText("tumour")
    rows = {r["class"]: r for r in w.count_region()}
    assert rows["all"]["count"] == len(s.query(*vb))
    out = w.export_counts(str(tmp_path / "counts.csv"))
    assert "tumour,all," in open(out).read()
    assert _lod.controller_of(layer) is ctl
    assert not _lod._WARNED  # every swap took the fast path


def test_whole_slide_detection_goes_to_the_store_and_the_writers_read_it(make_napari_viewer, qtbot, sample_path,
                                                                         tmp_path, monkeypatch):
    import shutil

    from napari_histoai.io.napari_writers import write_points_csv
    from napari_histoai.io.point_store import PointStore
    from napari_histoai.io.points import read_points_csv
    from napari_histoai.widgets import detect_widget as dw
    from napari_histoai.widgets.wholeslide_widget import WholeSlideWidget, store_path_for

    monkeypatch.setattr(dw, "STORE_MIN_POINTS", 1)  # the sample is small; a slide has millions
    path = tmp_path / "slide.tif"
    shutil.copy(sample_path, path)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-histoai")
    image = viewer.layers[0]
    w = dw.DetectWidget(viewer)
    w.model_combo.setCurrentText("classical")
    w.region_combo.setCurrentText(dw.REGION_WHOLE)
    w.panel.sync = True
    w.start()
    store = PointStore(store_path_for(image))
    assert w.last_result.store_path == str(store.path) and len(store) == len(w.last_result) > 300
    assert "Saved to" in w.summary.text() and w.last_layer.metadata["point_store"] == str(store.path)
    # napari's writer for that layer exports the whole store, not the loaded window
    out = write_points_csv(str(tmp_path / "all.csv"), w.last_layer.data, {"metadata": w.last_layer.metadata})
    assert len(read_points_csv(out[0])) == len(store)
    # the Whole-slide dock finds the store of the image
    ws = WholeSlideWidget(viewer)
    ws.image_combo.setCurrentText(image.name)
    ctl = ws.open_store()
    assert ctl is not None and {r["class"]: r["count"] for r in ws.rows}["all"] == len(store)


def test_whole_slide_labels_as_a_multiscale_labels_layer(make_napari_viewer, tmp_path):
    import zarr

    from napari_histoai.io.label_pyramid import open_label_pyramid, write_label_pyramid
    from napari_histoai.widgets._lod import add_label_pyramid

    # a streamed whole-slide segmentation: a zarr array on disk, as the engine writes it
    lab = zarr.create_array(str(tmp_path / "streamed.zarr"), shape=(5000, 4000), chunks=(1000, 1000), dtype="uint32")
    lab[100:120, 200:230] = 7
    lab[4000:4010, 3000:3100] = 70_000
    p = write_label_pyramid(tmp_path / "labels.zarr", lab, mpp=0.5, chunk=512, min_size=700)
    levels, mpp = open_label_pyramid(p)
    assert mpp == 0.5 and [lv.shape for lv in levels] == [(5000, 4000), (2500, 2000), (1250, 1000), (625, 500)]
    assert int(levels[2][25, 50].compute()) == 7 and int(levels[1][2000, 1500].compute()) == 70_000  # ids kept
    viewer = make_napari_viewer()
    layer = add_label_pyramid(viewer, p)
    assert layer.multiscale and layer.scale[-1] == 0.5 and str(layer.units[-1]) == "micrometer"
    assert layer.level_shapes[-1].tolist() == [625, 500]


def test_the_fast_swap_leaves_the_layer_as_napari_setters_would(make_napari_viewer, tmp_path):
    """The swap assigns napari's per-point state directly (colours, symbols, sizes, features); the
    layer must end up as napari's own setters (the fallback) leave it."""
    import pandas as pd

    from napari_histoai.io.point_store import PointStore
    from napari_histoai.widgets import _lod
    from napari_histoai.widgets.correct_widget import _set_defaults

    rng = np.random.default_rng(1)
    n = 50_000
    store = PointStore.create(tmp_path / "s.points", rng.uniform(0, 20_000, (n, 2)), rng.integers(0, 4, n), CLASSES,
                              rng.uniform(0.5, 1, n), shape=(20_000, 20_000), mpp=0.5)
    viewer = make_napari_viewer()
    fast, public = _lod.LodController(viewer, store), _lod.LodController(viewer, store)
    for c in (fast, public):
        _set_defaults(c.points_layer, "inflammatory")  # what the correction dock's palette does

    def state(ly):
        return {"data": np.asarray(ly.data), "features": ly.features, "defaults": ly.feature_defaults,
                "face": np.asarray(ly.face_color), "border": np.asarray(ly.border_color), "size": np.asarray(ly.size),
                "border_width": np.asarray(ly.border_width), "symbol": [str(s) for s in ly.symbol],
                "shown": np.asarray(ly.shown), "view": np.asarray(ly._view_indices),
                "cycle_values": np.asarray(ly._face.color_properties.values).astype(str),
                "current": (ly._face.color_properties.current_value, tuple(ly._face.current_color))}

    for box in ((0, 0, 3000, 4000), (5000, 5000, 5600, 5900), (0, 0, 0, 0), (100, 8000, 4000, 12_000)):
        win = _lod._prepare(store.query(*box), list(store.classes), fast._style())
        _lod._swap_fast(fast.points_layer, dict(win))
        _lod._swap_public(public.points_layer, dict(win))
        for c in (fast, public):
            c.points_layer.refresh()
        a, b = state(fast.points_layer), state(public.points_layer)
        assert len(a["data"]) == len(win["yx"])
        for k in a:
            if isinstance(a[k], pd.DataFrame):
                pd.testing.assert_frame_equal(a[k], b[k], check_categorical=True)
            elif isinstance(a[k], np.ndarray):
                assert a[k].shape == b[k].shape and np.allclose(a[k], b[k]) if a[k].dtype.kind == "f" \
                    else np.array_equal(a[k], b[k]), (box, k)
            else:
                assert a[k] == b[k], (box, k)
        assert int(a["defaults"]["store_id"][0]) == -1 and a["defaults"]["class"][0] == "inflammatory"
    assert not _lod._WARNED
