"""One CyC-PDAM training step's losses (paper eq. 4):

    L = a_img L_rpn + a_ins L_det + a_sem L_sem + L_img-da + L_sem-da + L_ins-da

a_* are the task re-weighting factors from the discriminators' source probabilities (1 when TR
is off); the discriminator losses reach the features through gradient reversal with the
scheduled alpha, and are scaled by ``config.da_weight``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .grl import grad_reverse
from .reweight import task_weight

__all__ = ["step_losses", "N_INSTANCE_ROIS"]

N_INSTANCE_ROIS = 64   # RPN proposals per image fed to the instance discriminator


def _bce(logits: torch.Tensor, source: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if source else 0.0))


def step_losses(net, x_s: torch.Tensor, target: dict, fg: torch.Tensor, x_t: Optional[torch.Tensor], cfg,
                alpha: float) -> tuple[torch.Tensor, dict]:
    """(total loss, parts as floats) for one source image ``x_s`` [1, 3, c, c] (normalised) with
    Mask R-CNN ``target`` and foreground ``fg`` [1, c, c] long, and one target image ``x_t`` (or
    None when no feature-level component is on)."""
    det = net.detector
    size = tuple(x_s.shape[-2:])
    use_t = x_t is not None and (cfg.img_da or cfg.ins_da or cfg.sem)
    x = torch.cat([x_s, x_t]) if use_t else x_s
    feats = det.backbone(x)
    f_s = {k: v[:1] for k, v in feats.items()}
    images_s = net.image_list(x_s)
    props_s, rpn_l = det.rpn(images_s, f_s, [target])
    _, roi_l = det.roi_heads(f_s, props_s, images_s.image_sizes, [target])
    parts = {"rpn": sum(rpn_l.values()), "det": roi_l["loss_classifier"] + roi_l["loss_box_reg"],
             "mask": roi_l["loss_mask"]}
    w = {"img": 1.0, "sem": 1.0, "ins": 1.0}
    da = x_s.new_zeros(())
    if cfg.sem:
        sem_logits = net.sem_head(feats, size)
        parts["sem"] = F.cross_entropy(sem_logits[:1], fg)
    if use_t and cfg.img_da:
        logits = net.d_img(grad_reverse(net.d_img.pool(feats), alpha))
        l_img = _bce(logits[:1], True) + _bce(logits[1:], False)
        parts["img_da"] = l_img
        da = da + l_img
        if cfg.tr:
            w["img"] = task_weight(torch.sigmoid(logits[:1]), cfg.beta, cfg.tr_floor)
    if use_t and cfg.sem:
        logits = net.d_sem(grad_reverse(net.entropy(sem_logits), alpha))
        l_sem = _bce(logits[:1], True) + _bce(logits[1:], False)
        parts["sem_da"] = l_sem
        da = da + l_sem
        if cfg.tr:
            w["sem"] = task_weight(torch.sigmoid(logits[:1]), cfg.beta, cfg.tr_floor)
    if use_t and cfg.ins_da:
        f_t = {k: v[1:] for k, v in feats.items()}
        props_t = net.proposals(net.image_list(x_t), f_t)
        boxes = [props_s[0][:N_INSTANCE_ROIS].detach(), props_t[0][:N_INSTANCE_ROIS].detach()]
        n_s = len(boxes[0])
        inst = torch.cat([net.instance_features(f_s, boxes[:1], [size]),
                          net.instance_features(f_t, boxes[1:], [size])])
        logits = net.d_ins(grad_reverse(inst, alpha))
        l_ins = _bce(logits[:n_s], True) + _bce(logits[n_s:], False)
        parts["ins_da"] = l_ins
        da = da + l_ins
        if cfg.tr and n_s:
            w["ins"] = task_weight(torch.sigmoid(logits[:n_s]), cfg.beta, cfg.tr_floor)
    total = w["img"] * parts["rpn"] + w["ins"] * (parts["det"] + parts["mask"]) + cfg.da_weight * da
    if cfg.sem:
        total = total + w["sem"] * parts["sem"]
    out = {k: float(v.detach()) for k, v in parts.items()}
    out.update({f"w_{k}": float(v) for k, v in w.items() if cfg.tr})
    return total, out
