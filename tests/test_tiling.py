"""Tiling covers every pixel once; stitching reports every nucleus/object exactly once."""

import numpy as np
import pytest

from napari_histoai.engine.tiling import LabelStitcher, stitch_points, tile_grid
from napari_histoai.methods.classical import ClassicalDetector


@pytest.mark.parametrize("shape,tile,overlap,region", [
    ((1000, 1300), 256, 32, None), ((500, 500), 512, 64, None), ((2000, 900), 300, 100, (130, 40, 1777, 851)),
])
def test_cores_partition_the_region(shape, tile, overlap, region):
    tiles = tile_grid(shape, tile, overlap, region)
    y0, x0, y1, x1 = region or (0, 0, *shape)
    cover = np.zeros(shape, int)
    for t in tiles:
        assert t.y1 - t.y0 <= tile and t.x1 - t.x0 <= tile
        assert t.y0 <= t.cy0 < t.cy1 <= t.y1 and t.x0 <= t.cx0 < t.cx1 <= t.x1
        cover[t.cy0:t.cy1, t.cx0:t.cx1] += 1
    assert (cover[y0:y1, x0:x1] == 1).all()
    assert cover.sum() == (y1 - y0) * (x1 - x0)


def test_bad_tiling_arguments():
    with pytest.raises(ValueError):
        tile_grid((100, 100), 64, 64)
    with pytest.raises(ValueError):
        tile_grid((100, 100), 64, 8, (50, 50, 50, 90))


def test_tiled_detection_equals_whole_image_detection(sample_path):
    """On a real H&E image, tiling + stitching finds the same nuclei as one pass: none lost or
    duplicated at seams (tiles of 160 px put many nuclei on seams)."""
    from napari_histoai.io import open_image

    img = open_image(sample_path).read_region(0, 0, 600, 700)
    det = ClassicalDetector()
    whole, _, _ = det.detect(img)
    per_tile = []
    for t in tile_grid(img.shape, 160, 48):
        p, c, s = det.detect(img[t.y0:t.y1, t.x0:t.x1])
        per_tile.append((t, p + [t.y0, t.x0], c, s))
    pts, _, _ = stitch_points(per_tile, merge_radius=3)
    assert len(whole) > 100
    assert len(pts) == len(whole)
    from scipy.spatial import cKDTree

    d, idx = cKDTree(whole).query(pts)
    assert d.max() < 0.5 and len(set(idx.tolist())) == len(whole)


def test_point_seen_by_two_tiles_at_slightly_different_places_is_kept_once():
    tiles = tile_grid((100, 200), 120, 40)
    a, b = tiles[0], tiles[1]
    seam = a.cx1
    per_tile = [
        (a, np.array([[50.0, seam - 0.6]]), np.array([1]), np.array([0.9])),
        (b, np.array([[50.2, seam + 0.7]]), np.array([1]), np.array([0.8])),
    ]
    pts, cls, sc = stitch_points(per_tile, merge_radius=3)
    assert len(pts) == 1 and sc[0] == pytest.approx(0.9)


def _discs(shape, centres, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


def test_label_stitching_gives_each_object_one_id():
    rng = np.random.default_rng(0)
    centres = [(rng.uniform(10, 390), rng.uniform(10, 590)) for _ in range(60)]
    truth = _discs((400, 600), centres, 7)
    out = np.zeros_like(truth)
    st = LabelStitcher(out)
    for t in tile_grid(truth.shape, 128, 40):
        crop = truth[t.y0:t.y1, t.x0:t.x1]
        # a tile-local labelling, as a segmenter would produce (ids differ per tile)
        from skimage.measure import label

        st.add(t, label(crop > 0))
    from skimage.measure import label as lab

    n_true = lab(truth > 0).max()
    assert out.max() == n_true
    # every true connected object is covered by exactly one stitched id
    tl = lab(truth > 0)
    for i in range(1, n_true + 1):
        ids = np.unique(out[tl == i])
        assert len(ids[ids > 0]) == 1
