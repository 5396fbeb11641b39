"""Mixed-supervision rules on worked cases: T filter, V scaling and clipping, ratio R."""

import numpy as np
import pytest

from napari_histoai.methods.mixed_supervision import (
    mix_schedule,
    patch_filter,
    reweight,
    soft_labels,
)


def test_reweight_scales_clips_and_zeroes():
    s = np.array([0.002, 0.005, 0.1, 0.2, 0.3, 0.9])
    w = reweight(s, V=4.0, zero_below=0.01)
    # 0.008 -> 0 (below 0.01 after scaling), 0.02 kept, 0.4, 0.8, 1.2 -> 1, 3.6 -> 1
    assert np.allclose(w, [0.0, 0.02, 0.4, 0.8, 1.0, 1.0])
    assert np.allclose(reweight(s, V=1.0), [0.0, 0.0, 0.1, 0.2, 0.3, 0.9])


def test_soft_labels_apply_the_same_rule_per_pixel():
    prob = np.array([[0.002, 0.1], [0.3, 0.9]])
    lab = soft_labels(prob, V=4.0, zero_below=0.01)
    assert lab.dtype == np.float32 and lab.shape == (2, 2)
    assert np.allclose(lab, [[0.0, 0.4], [1.0, 1.0]])


def test_patch_filter_drops_patches_without_a_confident_point():
    # 2 x 2 patches of 10 px; patch (0,0) best 0.5 -> kept; (0,1) best 0.39 -> dropped; (1,1) 0.4 kept
    pts = np.array([[2, 2], [5, 5], [3, 14], [15, 15], [16, 12]], float)
    sc = np.array([0.5, 0.05, 0.39, 0.4, 0.1])
    mask, keep = patch_filter(pts, sc, (20, 20), 10, T=0.4)
    assert keep.tolist() == [True, True, False, True, True]
    assert mask[:10, :10].all() and not mask[:10, 10:].any() and not mask[10:, :10].any() and mask[10:, 10:].all()
    area = np.ones((20, 20), bool)
    area[:, :5] = False
    m2, _ = patch_filter(pts, sc, (20, 20), 10, T=0.4, area=area)
    assert not m2[:, :5].any() and m2[:10, 5:10].all()


def test_mix_schedule_follows_the_ratio():
    k = mix_schedule((2, 1, 7), (True, True, True), 10)
    assert (k.count("fine"), k.count("pseudo"), k.count("negative")) == (2, 1, 7)
    k = mix_schedule((2, 1, 7), (True, True, True), 100, rng=np.random.default_rng(0))
    assert (k.count("fine"), k.count("pseudo"), k.count("negative")) == (20, 10, 70)
    assert k[:10] != ["fine"] * 2 + ["pseudo"] + ["negative"] * 7  # shuffled
    # a missing kind: the others share the batch at their own ratio
    k = mix_schedule((2, 1, 7), (True, True, False), 9)
    assert (k.count("fine"), k.count("pseudo"), k.count("negative")) == (6, 3, 0)
    k = mix_schedule((2, 1, 1), (True, False, False), 4)
    assert k == ["fine"] * 4
    with pytest.raises(ValueError):
        mix_schedule((2, 1, 0), (False, False, True), 4)
