"""The domain-adaptive Mask R-CNN of CyC-PDAM: torchvision's Mask R-CNN on a GroupNorm backbone
and FPN, a panoptic-FPN semantic head, and the image-, semantic- and instance-level
discriminators behind gradient reversal.

Images enter as float tensors [B, 3, H, W] scaled by :func:`normalise` (H, W multiples of 32);
torchvision's own resizing transform is bypassed, so boxes and masks stay in input pixels.
Architecture widths come from :class:`~.config.AdaptConfig` (``compact``: a small GN ResNet,
FPN 64; ``paper``: ResNet-50-GN, FPN 256, box head 1024).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .discriminators import ImageDiscriminator, InstanceDiscriminator, SemanticDiscriminator

__all__ = ["PDAMNet", "build", "detect", "normalise", "gn"]


def gn(c: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (the paper's default), fewer for narrow layers (>= 4 channels a
    group)."""
    return nn.GroupNorm(max(1, min(32, c // 4)), c)


def normalise(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 or 0..255 float [B, 3, H, W] -> float, about zero mean and unit spread."""
    return (rgb.float() / 255.0 - 0.5) / 0.25


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = gn(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = gn(cout)
        self.skip = None if (cin == cout and stride == 1) else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), gn(cout))

    def forward(self, x):
        y = F.relu(self.n1(self.c1(x)))
        y = self.n2(self.c2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


class SmallGNResNet(nn.Module):
    """A small residual backbone with GroupNorm: returns C2, C3, C4 at strides 4, 8, 16 with
    widths 2w, 4w, 8w."""

    def __init__(self, width: int = 24, blocks: int = 2):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), gn(w), nn.ReLU(inplace=True))
        chans = [w, 2 * w, 4 * w, 8 * w]
        self.stages = nn.ModuleList()
        for i in range(3):
            layers = [_Block(chans[i], chans[i + 1], 2)] + [_Block(chans[i + 1], chans[i + 1], 1) for _ in range(blocks - 1)]
            self.stages.append(nn.Sequential(*layers))
        self.out_channels_list = chans[1:]

    def forward(self, x):
        x = self.stem(x)
        out = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out[str(i)] = x
        return out


class _Backbone(nn.Module):
    """Body + FPN (GroupNorm): {'0': stride 4, '1': 8, '2': 16, 'pool': 32} with ``out_channels``."""

    def __init__(self, body: nn.Module, in_channels_list: list, out_channels: int):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks=LastLevelMaxPool(), norm_layer=gn)
        self.out_channels = out_channels

    def forward(self, x):
        return self.fpn(self.body(x))


class _ResNetBody(nn.Module):
    """torchvision ResNet-50 with GroupNorm (random init): C2..C4 at strides 4, 8, 16."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        r = resnet50(weights=None, norm_layer=gn)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.layers = nn.ModuleList([r.layer1, r.layer2, r.layer3])
        self.out_channels_list = [256, 512, 1024]

    def forward(self, x):
        x = self.stem(x)
        out = OrderedDict()
        for i, layer in enumerate(self.layers):
            x = layer(x)
            out[str(i)] = x
        return out


class SemanticHead(nn.Module):
    """Panoptic-FPN semantic branch: each of FPN levels '0'..'2' goes through (conv 3x3, GN, ReLU,
    x2 upsample) until stride 4; the sum goes to a 1x1 conv -> logits [B, 2, H, W] (bilinear x4)."""

    def __init__(self, in_channels: int, width: int, n_classes: int = 2):
        super().__init__()
        self.branches = nn.ModuleList()
        for level in range(3):
            layers, c = [], in_channels
            for _ in range(max(1, level)):
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), gn(width), nn.ReLU(inplace=True)]
                c = width
                if level > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.branches.append(nn.Sequential(*layers))
        self.out = nn.Conv2d(width, n_classes, 1)

    def forward(self, features: dict, size) -> torch.Tensor:
        x = sum(b(features[str(i)]) for i, b in enumerate(self.branches))
        return F.interpolate(self.out(x), size=size, mode="bilinear", align_corners=False)


class PDAMNet(nn.Module):
    """Mask R-CNN (``.detector``) + semantic head + the three discriminators. Only ``.detector``
    (and, optionally, the semantic head) is needed at inference."""

    def __init__(self, arch: dict):
        super().__init__()
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
        from torchvision.ops import MultiScaleRoIAlign

        self.arch = dict(arch)
        if arch["backbone"] == "resnet50-gn":
            body = _ResNetBody()
        else:
            body = SmallGNResNet(arch["width"], arch.get("blocks", 2))
        c = arch["fpn"]
        backbone = _Backbone(body, body.out_channels_list, c)
        rep, mw = arch["box_rep"], arch["mask_width"]
        sizes = tuple((s,) for s in arch["anchors"])
        anchor = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        names = ["0", "1", "2"]
        self.detector = MaskRCNN(
            backbone, num_classes=None,
            rpn_anchor_generator=anchor,
            rpn_pre_nms_top_n_train=arch["rpn_pre"], rpn_post_nms_top_n_train=arch["rpn_post"],
            rpn_pre_nms_top_n_test=arch["rpn_pre"], rpn_post_nms_top_n_test=arch["rpn_post"],
            box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
            box_head=TwoMLPHead(c * 49, rep), box_predictor=FastRCNNPredictor(rep, 2),
            box_batch_size_per_image=arch["roi_batch"], box_detections_per_img=arch["max_det"],
            box_score_thresh=0.05, box_nms_thresh=arch["nms"],
            mask_roi_pool=MultiScaleRoIAlign(names, 14, 2),
            mask_head=MaskRCNNHeads(c, (mw,) * 4, 1, norm_layer=gn),
            mask_predictor=MaskRCNNPredictor(mw, mw, 2),
        )
        self.sem_head = SemanticHead(c, arch["sem_width"])
        self.d_img = ImageDiscriminator(c, arch["d_width"])
        self.d_sem = SemanticDiscriminator(2, arch["d_sem_width"])
        self.d_ins = InstanceDiscriminator(rep, 256)
        if 4 * mw != rep:
            raise ValueError("mask_width * 4 must equal box_rep (pooled mask features add to box features)")

    # ---------------------------------------------------------------- pieces
    def image_list(self, x: torch.Tensor):
        from torchvision.models.detection.image_list import ImageList

        return ImageList(x, [tuple(x.shape[-2:])] * x.shape[0])

    def proposals(self, images, features: dict) -> list:
        """RPN proposals without loss (RPN in eval mode for this call): list of [n, 4] boxes."""
        rpn = self.detector.rpn
        was = rpn.training
        rpn.training = False
        try:
            boxes, _ = rpn(images, features)
        finally:
            rpn.training = was
        return boxes

    def instance_features(self, features: dict, boxes: list, sizes) -> torch.Tensor:
        """[N, box_rep] = box-head features + mask-head features pooled 2 x 2 (paper sec. 3.1)."""
        rh = self.detector.roi_heads
        bf = rh.box_head(rh.box_roi_pool(features, boxes, sizes))
        mf = rh.mask_head(rh.mask_roi_pool(features, boxes, sizes))
        return bf + F.adaptive_avg_pool2d(mf, 2).flatten(1)

    @staticmethod
    def entropy(sem_logits: torch.Tensor) -> torch.Tensor:
        """Per-class Shannon entropy terms -p log p of the softmax [B, 2, H, W]."""
        p = sem_logits.softmax(1)
        return -p * torch.log(p.clamp_min(1e-6))

    @torch.no_grad()
    def detect(self, x: torch.Tensor) -> list:
        return detect(self.detector, x)


def detect(detector, x: torch.Tensor) -> list:
    """Eval-mode detections of a Mask R-CNN ``detector`` for normalised images [B, 3, H, W]
    (torchvision's resizing transform bypassed): per image {boxes [N, 4] (x0, y0, x1, y1 px),
    scores [N], masks [N, 1, 28, 28] probabilities in box coordinates}."""
    from torchvision.models.detection.image_list import ImageList

    images = ImageList(x, [tuple(x.shape[-2:])] * x.shape[0])
    feats = detector.backbone(x)
    props, _ = detector.rpn(images, feats)
    out, _ = detector.roi_heads(feats, props, images.image_sizes)
    return out


def set_test_proposals(detector, pre: int, post: int) -> None:
    """Inference RPN budget of a torchvision Mask R-CNN: ``pre`` proposals per level before NMS,
    ``post`` after (torchvision keeps separate training / testing values)."""
    rpn = detector.rpn
    rpn._pre_nms_top_n = dict(rpn._pre_nms_top_n, testing=int(pre))
    rpn._post_nms_top_n = dict(rpn._post_nms_top_n, testing=int(post))


def build(arch: dict) -> PDAMNet:
    return PDAMNet(arch)
