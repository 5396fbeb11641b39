"""Hungarian matcher and set criterion on worked cases."""

import torch

from napari_histoai.methods.detection.configs import get_config
from napari_histoai.methods.detection.loss import SetCriterion
from napari_histoai.methods.detection.matcher import HungarianMatcher, focal_class_cost


def _logits(rows):
    return torch.logit(torch.tensor(rows, dtype=torch.float32).clamp(1e-4, 1 - 1e-4))


def test_points_decide_when_classes_agree():
    m = HungarianMatcher(cost_class=2.0, cost_point=5.0)
    out = {"pred_logits": _logits([[[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]]]),
           "pred_points": torch.tensor([[[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]])}
    tg = [{"points": torch.tensor([[0.88, 0.9], [0.12, 0.1]]), "labels": torch.tensor([0, 0])}]
    (qi, ti), = m(out, tg)
    assert dict(zip(ti.tolist(), qi.tolist())) == {0: 2, 1: 0}


def test_class_decides_when_points_tie():
    m = HungarianMatcher(cost_class=2.0, cost_point=5.0)
    out = {"pred_logits": _logits([[[0.95, 0.02], [0.02, 0.95]]]),
           "pred_points": torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])}
    tg = [{"points": torch.tensor([[0.5, 0.5], [0.5, 0.5]]), "labels": torch.tensor([1, 0])}]
    (qi, ti), = m(out, tg)
    assert dict(zip(ti.tolist(), qi.tolist())) == {0: 1, 1: 0}


def test_unknown_class_uses_best_class_probability():
    logits = _logits([[0.9, 0.01], [0.01, 0.01]])
    c = focal_class_cost(logits, torch.tensor([-1]))
    assert c[0, 0] < c[1, 0]  # the confident proposal is cheaper, whichever class it has
    m = HungarianMatcher()
    out = {"pred_logits": logits[None], "pred_points": torch.tensor([[[0.3, 0.3], [0.3, 0.3]]])}
    (qi, ti), = m(out, [{"points": torch.tensor([[0.3, 0.3]]), "labels": torch.tensor([-1])}])
    assert qi.tolist() == [0]


def test_empty_targets_and_matching_is_no_grad():
    m = HungarianMatcher()
    lg = torch.zeros(1, 4, 3, requires_grad=True)
    (qi, ti), = m({"pred_logits": lg, "pred_points": torch.rand(1, 4, 2)}, [{"points": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.int64)}])
    assert len(qi) == 0 and len(ti) == 0


def test_criterion_perfect_vs_wrong():
    cfg = get_config("tiny", classes=["a", "b"])
    crit = SetCriterion(cfg)
    tg = [{"points": torch.tensor([[0.2, 0.3]]), "labels": torch.tensor([1])}]
    good = {"pred_logits": _logits([[[0.01, 0.99], [0.01, 0.01]]]), "pred_points": torch.tensor([[[0.2, 0.3], [0.7, 0.7]]])}
    bad = {"pred_logits": _logits([[[0.99, 0.01], [0.9, 0.9]]]), "pred_points": torch.tensor([[[0.6, 0.1], [0.7, 0.7]]])}
    lg, _ = crit(good, tg)
    lb, parts = crit(bad, tg)
    assert float(lg) < 0.05 < float(lb)
    assert parts["point"] > 0
