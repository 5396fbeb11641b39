"""The seeded tumour / normal mosaic slides (napari_histoai.devdata.tumour_mosaics), built tiny."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_histoai.devdata.paint import _glass
from napari_histoai.devdata.tumour_mosaics import (
    TRUTH_DOWNSAMPLE,
    make_tumour_mosaics,
    source_pools,
)
from napari_histoai.errors import JobError

TINY = {"n_train": 4, "n_eval": 2, "n_annotated": 2, "size": (1024, 1024), "seed": 7}


def _png(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def built(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mosaics") / "set"
    seen = []
    manifest = make_tumour_mosaics(data_dir, out, on_progress=seen.append, **TINY)
    assert seen[-1].done == seen[-1].total == 6
    return out, manifest


def test_pools_are_disjoint_and_follow_the_rule(data_dir, built):
    pools = source_pools(data_dir)
    train = set(pools["train"]["tumour"]) | set(pools["train"]["normal"])
    ev = set(pools["eval"]["tumour"]) | set(pools["eval"]["normal"])
    assert train and ev and not train & ev
    assert not set(pools["train"]["tumour"]) & set(pools["train"]["normal"])
    assert all(f.startswith(("crchisto/train/", "tissue_tiles/")) for f in train)
    crc = {k: [f for f in pools["train"][k] + pools["eval"][k] if f.startswith("crchisto/train/")]
           for k in ("tumour", "normal")}
    assert (len(crc["tumour"]), len(crc["normal"])) == (16, 35)  # the stated rule on crchisto/train
    val = [f for k in ("tumour", "normal") for f in pools["eval"][k] if f.startswith("crchisto/val/")]
    assert len(val) == 4
    assert not any("ADI-" in f or "BACK-" in f for f in train | ev)
    assert built[1]["pools"] == pools


def test_layout_and_labels_match_manifest(built):
    out, m = built
    assert m["seed"] == 7 and m["size"] == [1024, 1024] and m["mpp"] == 0.5
    assert m["truth_downsample"] == TRUTH_DOWNSAMPLE == 4
    assert json.loads((out / "manifest.json").read_text()) == m
    for split, n in (("train", 4), ("eval", 2)):
        with open(out / split / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["slide"] for r in rows] == sorted(p.name for p in (out / split / "slides").glob("*.ome.tif"))
        want = {s["name"]: s["label"] for s in m["slides"] if s["split"] == split}
        assert {r["slide"]: r["label"] for r in rows} == want and len(want) == n
        assert sorted(want.values()) == ["normal"] * (n // 2) + ["tumour"] * (n // 2)
    assert not (out / "eval" / "annotations").exists()


def test_truth_positive_only_in_tumour_slides(built):
    out, m = built
    for s in m["slides"]:
        t = _png(out / s["truth"])
        assert t.dtype == np.uint8 and t.shape == (256, 256)
        assert set(np.unique(t)) <= {0, 255}
        if s["label"] == "tumour":
            assert (t > 0).sum() * TRUTH_DOWNSAMPLE ** 2 >= 0.8 * 250 * 250  # at least ~250 x 250 px
            frac = (t > 0).mean() / s["tissue_fraction"]
            assert frac == pytest.approx(s["tumour_fraction_of_tissue"], rel=1e-3)
        else:
            assert not t.any() and s["tumour_fraction_of_tissue"] == 0


def test_slide_opens_with_pixel_size_pyramid_and_glass_background(built):
    from napari_histoai.engine.tissue import tissue_mask_from_rgb
    from napari_histoai.io import open_image

    out, m = built
    for s in m["slides"]:
        with open_image(out / s["slide"]) as img:
            assert img.shape == (1024, 1024, 3) and img.mpp == pytest.approx(0.5)
            assert len(img.levels) > 1
            thumb, ds = img.read_overview(256)
        tissue = tissue_mask_from_rgb(thumb[..., :3])
        assert tissue.mean() == pytest.approx(s["tissue_fraction"], abs=0.05)  # glass outside is background
        truth = _png(out / s["truth"])[:: int(ds) // TRUTH_DOWNSAMPLE, :: int(ds) // TRUTH_DOWNSAMPLE] > 0
        if truth.any():
            assert (tissue & truth).sum() >= 0.98 * truth.sum()
    glass = _glass(np.random.default_rng(0), (64, 64), 4)(0, 256, 0, 256)
    assert glass.min() >= 230 and not tissue_mask_from_rgb(glass).any()


def test_annotation_polygons_lie_in_the_truth(built):
    from skimage.draw import polygon

    out, m = built
    ann = [s for s in m["slides"] if s["annotated"]]
    assert len(ann) == 2 and all(s["split"] == "train" and s["label"] == "tumour" for s in ann)
    assert sorted(p.name for p in (out / "train" / "annotations").iterdir()) == \
        sorted(s["name"].replace(".ome.tif", ".geojson") for s in ann)
    for s in ann:
        gj = json.loads((out / s["annotation"]).read_text())
        truth = _png(out / s["truth"]) > 0
        assert gj["type"] == "FeatureCollection" and len(gj["features"]) >= s["n_tumour_regions"]
        for f in gj["features"]:
            assert f["geometry"]["type"] == "Polygon"
            assert f["properties"] == {"objectType": "annotation", "classification": {"name": "Tumor"}}
            ring = np.asarray(f["geometry"]["coordinates"][0])  # [x, y] level-0 px
            assert (ring[0] == ring[-1]).all() and ring.max() <= 1024
            rr, cc = polygon(ring[:, 1] / TRUTH_DOWNSAMPLE - 0.5, ring[:, 0] / TRUTH_DOWNSAMPLE - 0.5, truth.shape)
            assert len(rr) > 100 and truth[rr, cc].mean() >= 0.9


def test_same_seed_same_truth_and_labels(data_dir, built, tmp_path):
    out, m = built
    m2 = make_tumour_mosaics(data_dir, tmp_path / "again", **TINY)
    assert m2 == m
    for s in m["slides"]:
        assert (out / s["truth"]).read_bytes() == (tmp_path / "again" / s["truth"]).read_bytes()
    for split in ("train", "eval"):
        assert (out / split / "labels.csv").read_bytes() == (tmp_path / "again" / split / "labels.csv").read_bytes()


def test_bad_data_folder_and_foreign_output_folder(data_dir, tmp_path):
    with pytest.raises(JobError, match="not the shared data folder"):
        make_tumour_mosaics(tmp_path / "nodata", tmp_path / "out", n_train=2, n_eval=0, size=(512, 512))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(JobError, match="not a tumour-mosaics folder"):
        make_tumour_mosaics(data_dir, tmp_path / "busy", n_train=2, n_eval=0, size=(512, 512))
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
