"""AC-Former's set criterion: torchvision's focal loss is the textbook formula; without weights or
ignored areas the criterion is exactly the plain AC-Former loss (a hand copy below); soft
weights and ignored areas (mixed supervision) change it as documented."""

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from napari_histoai.methods.detection.configs import get_config
from napari_histoai.methods.detection.loss import SetCriterion


def _focal_by_hand(logits, targets, alpha=0.25, gamma=2.0):
    """Lin et al. 2017, elementwise (the criterion's formula before torchvision's was used)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


def _plain_loss(crit, outputs, targets):
    """The plain AC-Former set loss, written out: one-hot focal targets, unknown-class (-1)
    matches push their best class to 1, L1 on matched points, normaliser = number of points."""
    n_norm = max(1.0, float(sum(len(t["labels"]) for t in targets)))
    sets = [outputs] + list(outputs.get("aux_outputs", [])) + [outputs["enc_outputs"]]
    cls_sum = pt_sum = outputs["pred_logits"].new_zeros(())
    for out in sets:
        logits, points = out["pred_logits"], out["pred_points"]
        onehot = torch.zeros_like(logits)
        keep = torch.ones(logits.shape[:2])
        l1, unk = logits.new_zeros(()), []
        for b, (qi, ti) in enumerate(crit.matcher(out, targets)):
            if len(qi) == 0:
                continue
            lab = targets[b]["labels"][ti]
            known = lab >= 0
            onehot[b, qi[known], lab[known]] = 1.0
            keep[b, qi[~known]] = 0.0
            if (~known).any():
                unk.append(logits[b, qi[~known]].max(-1)[0])
            l1 = l1 + (points[b, qi] - targets[b]["points"][ti]).abs().sum()
        cls = (_focal_by_hand(logits, onehot) * keep[..., None]).sum()
        if unk:
            u = torch.cat(unk)
            cls = cls + _focal_by_hand(u, torch.ones_like(u)).sum()
        cls_sum, pt_sum = cls_sum + cls / n_norm, pt_sum + l1 / n_norm
    return crit.w_class * cls_sum + crit.w_point * pt_sum, cls_sum, pt_sum


def _outputs(seed=0, b=3, q=20, k=4, aux=2):
    g = torch.Generator().manual_seed(seed)

    def one():
        return {"pred_logits": torch.randn(b, q, k, generator=g, requires_grad=True),
                "pred_points": torch.rand(b, q, 2, generator=g).requires_grad_()}

    return {**one(), "aux_outputs": [one() for _ in range(aux)], "enc_outputs": one()}


def _targets():
    return [{"points": torch.tensor([[0.2, 0.2], [0.7, 0.7], [0.5, 0.1]]), "labels": torch.tensor([0, -1, 3])},
            {"points": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)},
            {"points": torch.tensor([[0.9, 0.4], [0.3, 0.6]]), "labels": torch.tensor([-1, 2])}]


def test_torchvision_focal_is_the_textbook_formula():
    x = torch.tensor([0.3, -1.2])
    t = torch.tensor([1.0, 0.0])
    p = torch.sigmoid(x)
    exp = torch.stack([-0.25 * (1 - p[0]) ** 2 * torch.log(p[0]), -0.75 * p[1] ** 2 * torch.log(1 - p[1])])
    assert torch.allclose(sigmoid_focal_loss(x, t, 0.25, 2.0, reduction="none"), exp, atol=1e-6)
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1)) * 4
    t = torch.rand(5, 7, generator=torch.Generator().manual_seed(2))  # soft targets too
    assert torch.equal(sigmoid_focal_loss(x, t, 0.25, 2.0, reduction="none"), _focal_by_hand(x, t))


def test_without_weights_or_ignore_it_is_the_plain_loss_exactly():
    crit = SetCriterion(get_config("tiny"))
    out, tg = _outputs(), _targets()
    total, parts = crit(out, tg)
    exp, cls, pt = _plain_loss(crit, out, tg)
    assert torch.equal(total, exp) and parts == {"class": cls.item(), "point": pt.item()}
    g_new = torch.autograd.grad(total, [out["pred_logits"], out["pred_points"]])
    g_old = torch.autograd.grad(exp, [out["pred_logits"], out["pred_points"]])
    assert all(torch.equal(a, b) for a, b in zip(g_new, g_old))
    # weights of 1 and an empty ignored area: the same loss
    ones = [{**t, "weights": torch.ones(len(t["labels"])), "ignore": torch.zeros(8, 8, dtype=torch.bool)} for t in tg]
    assert torch.allclose(crit(out, ones)[0], exp, rtol=1e-6)


def test_soft_weights_and_ignored_area():
    cfg = get_config("tiny")
    crit = SetCriterion(cfg)
    torch.manual_seed(0)
    out = {"pred_logits": torch.randn(1, 20, 4), "pred_points": torch.rand(1, 20, 2)}
    t = {"points": torch.tensor([[0.2, 0.2], [0.7, 0.7]]), "labels": torch.tensor([0, -1])}
    base, _ = crit(out, [t])
    soft, _ = crit(out, [{**t, "weights": torch.tensor([0.5, 0.5])}])
    assert not torch.allclose(soft, base)
    assert crit.normaliser([{**t, "weights": torch.tensor([0.5, 0.25])}]) == 1.0  # at least 1
    assert crit.normaliser([{**t, "weights": torch.tensor([1.0, 0.5])}, t]) == 3.5  # 1.5 + 2 points
    ign = torch.ones(16, 16, dtype=torch.bool)
    ignored, _ = crit(out, [{**t, "ignore": ign}])
    assert ignored < base  # unmatched proposals in the ignored area add no loss
    empty = {"points": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long), "weights": torch.zeros(0)}
    all_ignored, _ = crit({**out, "aux_outputs": []}, [{**empty, "ignore": ign}])
    assert float(all_ignored) == 0.0
