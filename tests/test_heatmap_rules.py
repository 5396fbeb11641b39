"""The heatmap method's rules on hand-made maps: the E-step (T, V, clipping, the 0.01 floor,
hard negatives all zero), top-K, the stopping rule, window maxima, labels CSV and regions input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_histoai.errors import JobError
from napari_histoai.methods.heatmap.em import e_step, mil_selection
from napari_histoai.methods.heatmap.job import window_maxima
from napari_histoai.methods.heatmap.stage2 import best_round, stage2_inputs, top_k


def _maps(*peaks, size=4):
    """One patch map per peak value: zeros with the peak at (1, 1) and 0.002 elsewhere."""
    out = np.full((len(peaks), size, size), 0.002, np.float32)
    for i, p in enumerate(peaks):
        out[i, 1, 1] = p
    return out


def test_e_step_drops_patches_below_T_and_reweights_the_rest():
    pos = _maps(0.3, 0.5, 0.9)       # slide 0: tumour
    neg = _maps(0.2, 0.45)           # slide 1: no tumour
    es = e_step([pos, neg], [1, 0], T=0.4, V=4.0, zero_below=0.01)
    assert [(i, j) for i, j, _ in es.pseudo] == [(0, 1), (0, 2)]  # 0.3 < T dropped
    t = dict(((i, j), m) for i, j, m in es.pseudo)
    assert t[(0, 1)][1, 1] == pytest.approx(1.0)      # 0.5 * 4 clipped to 1
    assert t[(0, 2)][1, 1] == pytest.approx(1.0)
    # 0.002 * 4 = 0.008 < 0.01 -> 0 (a true negative stays 0)
    assert t[(0, 1)][0, 0] == 0.0
    assert es.negatives == [(1, 1)]                   # only the negative patch above T is a hard negative
    assert es.dropped == 2


def test_e_step_soft_values_between_floor_and_one():
    m = _maps(0.6)
    m[0, 2, 2] = 0.1   # 0.4 after V: kept soft
    m[0, 3, 3] = 0.003  # 0.012 after V: above the floor, kept
    es = e_step([m], [1], T=0.4)
    target = es.pseudo[0][2]
    assert target[2, 2] == pytest.approx(0.4)
    assert target[3, 3] == pytest.approx(0.012)
    assert target.max() <= 1.0


def test_e_step_skips_drawn_slides_and_fills_hard_negatives():
    neg = _maps(0.1, 0.3, 0.05)
    es = e_step([_maps(0.9), neg], [1, 0], skip=[True, False], T=0.4, min_negatives=2)
    assert es.pseudo == []                               # the drawn slide keeps its fine labels
    assert es.negatives == [(1, 1), (1, 0)]              # the two most confident negatives fill in
    # the fill never uses tumour-slide patches, and with min_negatives=0 nothing is filled
    assert e_step([_maps(0.1), neg], [1, 0], T=0.4).negatives == []


def test_e_step_can_take_every_negative_patch():
    neg = _maps(0.1, 0.5, 0.02)
    es = e_step([_maps(0.2), neg], [1, 0], T=0.4, all_negatives=True)
    assert es.negatives == [(1, 0), (1, 1), (1, 2)]   # all of the negative slide, whatever their maxima
    assert es.pseudo == [] and es.dropped == 1        # the tumour slide's patch under T is still dropped


def test_mil_selection_takes_the_top_patches_per_slide_with_the_slide_label():
    sel = mil_selection([_maps(0.1, 0.8, 0.5), _maps(0.7, 0.2)], [1, 0], k=1)
    assert sel == [(0, 1, 1), (1, 0, 0)]


def test_top_k_and_the_stopping_rule():
    assert list(top_k(np.array([0.1, 0.9, 0.5, 0.9]), 2)) == [1, 3]
    assert len(top_k(np.array([0.3]), 16)) == 1
    assert best_round([0.5, 0.2, 0.3, 0.2]) == 1   # lowest stage-2 loss, first on ties


def test_stage2_inputs_carry_rgb_and_the_map():
    imgs = np.zeros((2, 8, 8, 3), np.uint8)
    imgs[0, :4, :4] = 200
    probs = np.zeros((2, 2, 2), np.float32)
    probs[1, 1, 1] = 1.0
    x = stage2_inputs(imgs, probs)
    assert x.shape == (2, 4, 4, 4) and x.dtype == np.uint8
    assert x[0, 0, 0, 0] == 200 and x[0, 0, 3, 3] == 0
    assert x[1, 3, 3, 3] == 255 and x[1, 3, 0, 0] == 0


def test_window_maxima_cover_the_edges():
    m = np.zeros((10, 13), np.float32)
    m[9, 12] = 1.0
    vals, ys, xs = window_maxima(m, 4, 3)
    assert vals.max() == 1.0
    i = int(np.argmax(vals))
    assert ys[i] + 4 == 10 and xs[i] + 4 == 13        # the last window is flush with the edge
    assert set(np.unique(ys)) == {0, 3, 6}


def test_labels_csv(tmp_path):
    from napari_histoai.io.slide_labels import read_slide_labels

    p = tmp_path / "labels.csv"
    p.write_text("slide,label,mpp\na.ome.tif,tumour,\nb.svs,Normal,0.25\nc.tif,1,\n")
    assert read_slide_labels(p) == {"a.ome.tif": (1, None), "b.svs": (0, 0.25), "c.tif": (1, None)}
    for text, msg in [("slide,label\na.tif,maybe\n", "line 2: unknown label 'maybe'"),
                      ("name,x\na.tif,1\n", "must name a slide column"),
                      ("slide,label\na.tif,1\na.tif,0\n", "listed twice"),
                      ("slide,label,mpp\na.tif,1,-2\n", "mpp must be a positive"),
                      ("", "is empty")]:
        p.write_text(text)
        with pytest.raises(JobError, match=msg):
            read_slide_labels(p)


def test_regions_geojson_round_trip_and_rasterise(tmp_path):
    from napari_histoai.io.regions import rasterise_polygons, read_polygons, write_polygons

    sq = np.array([[10, 20], [10, 60], [50, 60], [50, 20]], float)  # (y, x)
    p = write_polygons(tmp_path / "a.geojson", [sq])
    doc = json.loads(p.read_text())
    assert doc["features"][0]["geometry"]["coordinates"][0][0] == [20.0, 10.0]  # x, y order
    (back,) = read_polygons(p)
    assert np.allclose(back, sq)
    m = rasterise_polygons([back], (20, 20), downsample=4)
    ys, xs = np.nonzero(m)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (2, 12, 5, 14)  # pixel centres inside the square
    p.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
                 '{"type": "Polygon", "coordinates": [[[0, 0], [1, "x"], [2, 2]]]}}]}')
    with pytest.raises(JobError, match="finite numbers"):
        read_polygons(p)


def test_config_rejects_bad_values():
    from napari_histoai.methods.heatmap import config_from

    with pytest.raises(JobError, match="mode"):
        config_from("compact", mode="weird")
    with pytest.raises(JobError, match="overlap"):
        config_from("compact", overlap=300)
    with pytest.raises(JobError, match="unknown heatmap config"):
        config_from("huge")
    assert config_from("paper").patch == 512 and config_from("paper").overlap == 128
