"""Whole-slide instance labels as a pyramid (io/label_pyramid): its levels are level 0 subsampled
(ids kept, none invented); a whole-slide segment run writes one next to its OME-TIFF; the
'Segment nuclei' dock shows a whole slide's labels as napari's multiscale Labels from one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_histoai.errors import JobError

TINY = dict(crop=96, widths=(8, 16, 32))
THRESHOLD = 0.5  # a 30-step network is not sure of its nuclei yet: the method's default (0.7) may find none
SHAPE = (1200, 1600)  # the synthetic slide (level-0 px at 0.5 µm/px)


def disc_tile(seed: int) -> np.ndarray:
    """RGB uint8 [256, 256, 3]: 14 dark purple discs (8 µm nuclei at 0.5 µm/px) on eosin pink."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    centres = rng.uniform(16, 240, (14, 2))
    d2 = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 for cy, cx in centres])
    img = np.empty((256, 256, 3), np.float32)
    img[:] = (235, 160, 200)
    img[d2.min(0) <= 8 ** 2] = (80, 40, 140)
    img = ndi.gaussian_filter(img, (0.7, 0.7, 0)) + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def disc_slide(tmp_path_factory) -> Path:
    """A 1200 x 1600 px pyramidal OME-TIFF of disc tiles (0.5 µm/px)."""
    from napari_histoai.io.mosaic import write_mosaic_slide

    p = tmp_path_factory.mktemp("slides") / "discs.ome.tif"
    return write_mosaic_slide(p, [disc_tile(i) for i in range(4)], SHAPE, mpp=0.5, period=2)


@pytest.fixture
def small_whole_slide(monkeypatch):
    """Make the small slide count as a whole slide: its labels stream to a zarr store and get a
    pyramid (longest side > 512 px; levels halve down to <= 256 px)."""
    import napari_histoai.engine.inference as E
    import napari_histoai.io.label_pyramid as LP

    monkeypatch.setattr(E, "IN_MEMORY_MAX_PIXELS", 1000)
    monkeypatch.setattr(LP, "PYRAMID_MIN_SIDE", 512)
    monkeypatch.setattr(LP, "PYRAMID_TOP_SIDE", 256)


def assert_consistent(levels, level0: np.ndarray) -> None:
    """Level k is level 0 at every 2**k-th pixel: every id in it is one of level 0's."""
    ids0 = set(np.unique(level0).tolist())
    for k, lv in enumerate(levels):
        a = np.asarray(lv)
        assert np.array_equal(a, level0[:: 2 ** k, :: 2 ** k]), k
        assert set(np.unique(a).tolist()) <= ids0


def test_levels_are_level0_subsampled_and_keep_its_ids(tmp_path):
    from napari_histoai.io.label_pyramid import (
        is_label_pyramid,
        label_pyramid_info,
        open_label_pyramid,
        pyramid_path_for,
        write_label_pyramid,
    )

    rng = np.random.default_rng(0)
    lab = ndi.label(ndi.gaussian_filter(rng.random((1300, 900)), 3) > 0.52)[0].astype(np.uint32)
    lab[lab > 0] += 70_000  # ids beyond uint16
    p = write_label_pyramid(tmp_path / "l.zarr", lab, mpp=0.5, chunk=256, min_size=200, origin=(100, 40),
                            downsample=2.0)
    levels, mpp = open_label_pyramid(p)
    assert [lv.shape for lv in levels] == [(1300, 900), (650, 450), (325, 225), (163, 113)]
    assert mpp == 0.5 and all(lv.dtype == np.uint32 for lv in levels)
    assert_consistent(levels, lab)
    assert label_pyramid_info(p) == {"mpp": 0.5, "origin": (100.0, 40.0), "downsample": 2.0}
    # rewriting replaces our pyramid; any other folder is left alone
    assert is_label_pyramid(p) and write_label_pyramid(p, lab[:300, :300], min_size=200) == p
    assert [lv.shape for lv in open_label_pyramid(p)[0]] == [(300, 300), (150, 150)]
    other = tmp_path / "slide.zarr"
    other.mkdir()
    (other / "keep.txt").write_text("an input slide")
    with pytest.raises(JobError, match="not a labels pyramid"):
        write_label_pyramid(other, lab)
    assert (other / "keep.txt").is_file()
    assert pyramid_path_for(tmp_path / "nuclei.ome.tif") == tmp_path / "nuclei.pyramid.zarr"
    assert pyramid_path_for("slide.TIF").name == "slide.pyramid.zarr"


def test_whole_slide_segment_run_writes_a_label_pyramid(disc_slide, tmp_path, small_whole_slide, one_torch_thread):
    import tifffile

    from napari_histoai.io.label_pyramid import label_pyramid_info, open_label_pyramid
    from napari_histoai.methods.selftrain import SelfTrainConfig
    from napari_histoai.tasks import segment_file

    out = tmp_path / "nuclei.tif"
    s = segment_file(disc_slide, out, config=SelfTrainConfig(steps=30, seed=0, threshold=THRESHOLD, **TINY),
                     device="cpu")
    assert s["pyramid"] == str(tmp_path / "nuclei.pyramid.zarr") and s["n"] > 100
    levels, mpp = open_label_pyramid(s["pyramid"])
    assert [lv.shape for lv in levels] == [SHAPE, (600, 800), (300, 400), (150, 200)]
    assert mpp == pytest.approx(0.5) and label_pyramid_info(s["pyramid"])["downsample"] == 1.0
    level0 = tifffile.imread(out)  # the OME-TIFF's full resolution
    assert level0.shape == SHAPE and int(level0.max()) == s["n"]
    assert_consistent(levels, level0.astype(np.uint32))
    # the temporary zarr store the labels streamed through is gone
    assert not any(p.name.startswith("histoai-") for p in tmp_path.iterdir())


def test_small_labels_get_no_pyramid():
    from napari_histoai.io.label_pyramid import PYRAMID_MIN_SIDE, needs_pyramid

    assert not needs_pyramid((PYRAMID_MIN_SIDE, PYRAMID_MIN_SIDE)) and needs_pyramid((10, PYRAMID_MIN_SIDE + 1))


@pytest.mark.gui
def test_the_segment_dock_shows_a_whole_slide_as_multiscale_labels(make_napari_viewer, disc_slide,
                                                                    small_whole_slide, one_torch_thread):
    pytest.importorskip("napari")
    from napari_histoai.widgets import segment_widget as sw

    viewer = make_napari_viewer()
    viewer.open(str(disc_slide), plugin="napari-histoai")
    image = viewer.layers[-1]
    w = sw.SegmentWidget(viewer)
    w.image_combo.setCurrentText(image.name)
    w.device_combo.setCurrentText("cpu")
    st = w.selftrain
    st.panel.sync = True
    st.steps_spin.setValue(30)
    st.threshold_spin.setValue(THRESHOLD)
    st.extra_config = dict(TINY)
    st.start()
    lab = st.labels_layer
    assert lab is not None, st.panel.last_error
    assert lab.multiscale and [tuple(s) for s in lab.level_shapes] == [SHAPE, (600, 800), (300, 400), (150, 200)]
    assert tuple(lab.scale) == pytest.approx(tuple(image.scale[-2:]))
    assert int(np.asarray(lab.data[1]).max()) > 0
    store = Path(lab.metadata["histoai_store"])
    pyramid = Path(lab.metadata["label_pyramid"])
    assert store.is_dir() and pyramid.parent == store.parent
    assert_consistent([np.asarray(d) for d in lab.data], np.asarray(st.last_result.labels[:]))
    viewer.layers.remove(lab)  # the temporary store and its pyramid go with the layer
    assert not store.exists() and not pyramid.exists()
