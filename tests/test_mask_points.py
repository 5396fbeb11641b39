"""Detection targets from binary nuclei masks (MoNuSeg's 17 tiles without instance labels)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_histoai.errors import JobError
from napari_histoai.methods.detection.data import centroids_from_mask, load_mask_folder


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_touching_nuclei_get_one_centre_each():
    m = _disc((80, 120), 40, 40, 14) | _disc((80, 120), 40, 64, 14) | _disc((80, 120), 20, 100, 6)
    c = centroids_from_mask(m, min_distance=12, min_size=20)
    assert len(c) == 3  # one blob of two touching nuclei + a lone one; connected components would give 2
    want = np.array([[40, 40], [40, 64], [20, 100]], float)
    d = np.linalg.norm(c[:, None] - want[None], axis=-1)
    assert d.min(0).max() < 3.0
    assert len(centroids_from_mask(np.zeros((50, 50), bool), 12)) == 0


def test_centres_of_real_monuseg_masks_match_its_annotated_centroids(data_dir):
    """Binarising two MoNuSeg instance masks (touching nuclei merge, as in the 17 binary-only
    masks) and taking watershed centres recovers the annotated centroids (F >= 0.9 at 3 µm)."""
    import tifffile
    from scipy.optimize import linear_sum_assignment

    from napari_histoai.io.points import read_points_csv

    mon = data_dir / "monuseg" / "train"
    for f in sorted((mon / "masks").glob("*.tif"))[:2]:
        inst = tifffile.imread(f)
        gt = read_points_csv(mon / "points" / (f.stem + ".csv")).yx
        c = centroids_from_mask(inst > 0, min_distance=12, min_size=32)  # 40x: 3 µm = 12 px
        d = np.linalg.norm(c[:, None] - gt[None], axis=-1)
        d[d > 12] = 1e6
        r, k = linear_sum_assignment(d)
        tp = int((d[r, k] < 1e6).sum())
        assert 2 * tp / (len(c) + len(gt)) >= 0.9, f.stem


def test_load_mask_folder_resamples_and_refuses_mismatched_masks(tmp_path):
    (tmp_path / "im").mkdir(), (tmp_path / "m").mkdir()
    im = np.full((200, 200, 3), 220, np.uint8)
    m = (_disc((200, 200), 50, 60, 16) | _disc((200, 200), 150, 120, 16)).astype(np.uint8)
    im[m > 0] = 90
    Image.fromarray(im).save(tmp_path / "im" / "a.png")
    Image.fromarray(m * 255).save(tmp_path / "m" / "a.png")
    (item,) = load_mask_folder(tmp_path / "im", tmp_path / "m", data_mpp=0.25, model_mpp=0.5)
    assert item.image.shape == (100, 100, 3) and (item.labels == -1).all()
    pts = item.points[np.argsort(item.points[:, 0])]
    assert np.allclose(pts, [[24.75, 29.75], [74.75, 59.75]], atol=1.0)  # halved with the image
    Image.fromarray(m[:100] * 255).save(tmp_path / "m" / "a.png")
    with pytest.raises(JobError, match="mask a.png is 200x100"):
        load_mask_folder(tmp_path / "im", tmp_path / "m", data_mpp=0.25, model_mpp=0.5)
    with pytest.raises(JobError, match="not found"):
        load_mask_folder(tmp_path / "nope", tmp_path / "m", data_mpp=0.25, model_mpp=0.5)
