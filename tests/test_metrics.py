"""Metrics on cases worked out by hand."""

import numpy as np
import pytest

from napari_histoai import metrics as M


def test_pairing_is_optimal_not_greedy():
    # greedy nearest-first would pair pred0-gt0 (d=1) and leave gt1 unmatched (pred1-gt1 d=7 > 6)
    pred = np.array([[0.0, 0.0], [0.0, 5.0]])
    gt = np.array([[0.0, 1.0], [0.0, -5.5]])
    pi, gi = M.pair_points(pred, gt, radius=6)
    assert sorted(zip(pi.tolist(), gi.tolist())) == [(0, 1), (1, 0)]


def test_detection_scores_by_hand():
    gt = np.array([[10, 10], [50, 50], [90, 90]], float)
    pred = np.array([[12, 11], [50, 57], [200, 200]], float)  # 1 hit (d=2.2), 1 miss (d=7), 1 far
    s = M.detection_scores(pred, gt, radius=6)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 2)
    assert s["f1"] == pytest.approx(2 * 1 / (2 + 2 + 2))
    assert M.detection_scores(np.zeros((0, 2)), np.zeros((0, 2)))["f1"] == 1.0


def test_hovernet_fc_by_hand():
    # classes 0, 1; ignore = 2 (unlabeled)
    gt = np.array([[0, 0], [0, 20], [0, 40], [0, 60], [0, 80]], float)
    gc = np.array([0, 0, 1, 2, 1])
    pred = np.array([[0, 1], [0, 21], [0, 41], [0, 61], [0, 200]], float)
    pc = np.array([0, 1, 1, 0, 0])
    s = M.classification_scores(pred, pc, gt, gc, n_classes=2, radius=6, ignore=2)
    # matched pairs (pred/gt class): 0/0, 1/0, 1/1; pair 3 has an unlabeled truth -> not in F_c
    # unmatched pred 4 (class 0) -> FP_d for class 0; unmatched gt 4 (class 1) -> FN_d for class 1
    # class 0 keeps the pairs involving 0: 0/0 (TP), 1/0 (FN); TN is 0 by construction
    f0 = 2 * 1 / (2 * 1 + 2 * 0 + 2 * 1 + 1 * 1 + 1 * 0)
    # class 1 keeps 1/0 (FP) and 1/1 (TP); FN_d = 1
    f1 = 2 * 1 / (2 * 1 + 2 * 1 + 2 * 0 + 1 * 0 + 1 * 1)
    assert s["f_c"][0] == pytest.approx(f0) == pytest.approx(0.4)
    assert s["f_c"][1] == pytest.approx(f1) == pytest.approx(0.4)
    assert s["f_d"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))


def test_fc_has_no_true_negatives_unlike_the_old_formula():
    """Three classes, perfect classification of classes 1 and 2 but class 0 always called 1: the
    reference F_c of class 0 is 0. The old formula counted every 1/1 and 2/2 pair as a true
    negative of class 0 and reported 2/3 for a class the model never gets right."""
    gt = np.array([[0, 20 * i] for i in range(6)], float)
    gc = np.array([0, 0, 1, 1, 2, 2])
    pc = np.array([1, 1, 1, 1, 2, 2])
    s = M.classification_scores(gt + 0.5, pc, gt, gc, n_classes=3, radius=6)
    assert s["f_c"][0] == 0.0
    old_f0 = 2 * (0 + 4) / (2 * (0 + 4) + 2 * 0 + 2 * 2)  # TN_c = 4 under the old formula
    assert old_f0 == pytest.approx(2 / 3) and s["f_c"][0] != pytest.approx(old_f0)
    # class 1: TP 2, FP 2 (the class-0 nuclei called 1) -> 4 / (4 + 4)
    assert s["f_c"][1] == pytest.approx(0.5)
    assert s["f_c"][2] == pytest.approx(1.0)


def test_radius_is_physical():
    assert M.radius_px(0.5) == pytest.approx(6.0)    # 20x: the papers' 6 px
    assert M.radius_px(0.25) == pytest.approx(12.0)  # 40x: HoVer-Net's 12 px
    assert M.radius_px(None) == pytest.approx(6.0)


def test_dice_and_aji_by_hand():
    gt = np.zeros((4, 6), int)
    gt[:, 0:2] = 1  # 8 px
    gt[:, 4:6] = 2  # 8 px
    pred = np.zeros((4, 6), int)
    pred[:, 0:3] = 5  # 12 px, overlaps gt1 by 8
    pred[0, 5] = 7  # 1 px inside gt2
    pred[3, 3] = 9  # stray 1 px, unmatched
    assert M.dice(gt, pred) == pytest.approx(2 * 9 / (16 + 14))
    # AJI: gt1<->5: I=8, U=12; gt2<->7: I=1, U=8; unused pred 9 adds 1 to U
    assert M.aji(gt, pred) == pytest.approx((8 + 1) / (12 + 8 + 1))


def test_pq_and_object_f1_by_hand():
    gt = np.zeros((10, 10), int)
    gt[0:4, 0:4] = 1  # 16 px
    gt[6:10, 6:10] = 2
    pred = np.zeros((10, 10), int)
    pred[0:4, 0:3] = 1  # IoU 12/16 = 0.75 with gt1
    pred[6:10, 9:10] = 2  # IoU 4/16 = 0.25 with gt2 -> not matched
    pq = M.panoptic_quality(gt, pred)
    assert pq["sq"] == pytest.approx(0.75)
    assert pq["dq"] == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert pq["pq"] == pytest.approx(0.75 * 0.5)
    assert M.object_f1(gt, pred) == pytest.approx(0.5)


def test_pooled_scores_never_pair_across_images():
    from napari_histoai.metrics import pooled_classification_scores

    # A: a hit at (10, 10); B: a prediction at (12, 10) with no truth; C: a missed unlabeled
    # nucleus at (11, 10). In one shared frame B's prediction would pair with C's nucleus;
    # pooled per image, A is a TP, B an FP and C an FN.
    a = (np.array([[10.0, 10.0]]), np.array([0]), np.array([[10.0, 10.0]]), np.array([0]))
    b = (np.array([[12.0, 10.0]]), np.array([1]), np.zeros((0, 2)), np.zeros(0, int))
    c = (np.zeros((0, 2)), np.zeros(0, int), np.array([[11.0, 10.0]]), np.array([-1]))  # a missed unlabeled nucleus
    r = pooled_classification_scores([a, b, c], n_classes=2, radius=6.0)
    assert r["n_pred"] == 2 and r["n_true"] == 2
    assert r["precision"] == 0.5 and r["recall"] == 0.5 and r["f_d"] == 0.5
    # class 0: one TP_c, no errors except nothing -> 1.0; class 1: only an unmatched prediction -> FP_d
    assert r["f_c"][0] == 1.0 and r["f_c"][1] < 1.0
    assert pooled_classification_scores([], 2)["n_pred"] == 0
