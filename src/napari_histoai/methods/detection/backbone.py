"""Backbones from torchvision architectures (built with ``weights=None``: nothing downloads),
truncated after the last stage used, with FuseStyle after the first and the last stage.

Stages are 1-based: stage s has stride 2**(s+1) (4, 8, 16, 32). ``Backbone.forward(x)`` takes
RGB in [0, 1] [B, 3, H, W], normalises with the ImageNet statistics and returns the feature
maps of ``cfg.backbone_stages`` (list of [B, C_s, H / stride_s, W / stride_s]).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ...errors import JobError
from ..fusestyle import FuseStyle

__all__ = ["Backbone", "build_backbone", "load_backbone_weights"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load user-supplied torchvision-format weights (safetensors, or a tensor-only torch file
    read with ``weights_only=True``) into a full torchvision model; the classifier head may be
    missing. One-line ``JobError`` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise JobError(f"backbone weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one line
        raise JobError(f"backbone weights {path} are unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(state, dict):
        raise JobError(f"backbone weights {path} do not hold a state dict")
    res = model.load_state_dict(state, strict=False)
    missing = [k for k in res.missing_keys if not k.startswith(("fc.", "classifier."))]
    if missing or res.unexpected_keys:
        raise JobError(
            f"backbone weights {path} do not fit {type(model).__name__} "
            f"({len(missing)} missing, {len(res.unexpected_keys)} unexpected keys)"
        )


class Backbone(nn.Module):
    """Truncated torchvision backbone; ``channels`` lists the channels of the returned maps."""

    def __init__(self, arch: str, stages: tuple, fusestyle: bool = False, partner: str = "argmin",
                 p: float = 0.5, alpha: float = 0.3, weights_path: str | None = None):
        super().__init__()
        import torchvision.models as tvm

        stages = tuple(sorted(int(s) for s in stages))
        if not stages or stages[0] < 1 or stages[-1] > 4:
            raise JobError(f"backbone stages must be in 1..4, got {stages}")
        last = stages[-1]
        full = getattr(tvm, arch)(weights=None)
        if weights_path:
            load_backbone_weights(full, weights_path)
        if arch.startswith("resnet"):
            stem = nn.Sequential(full.conv1, full.bn1, full.relu, full.maxpool)
            blocks = [full.layer1, full.layer2, full.layer3, full.layer4]
            widths = [blocks[i][-1].conv3.out_channels if hasattr(blocks[i][-1], "conv3")
                      else blocks[i][-1].conv2.out_channels for i in range(4)]
            body = [blocks[0]] + blocks[1:]
        elif arch.startswith("convnext"):
            f = full.features  # stem, s1, ds, s2, ds, s3, ds, s4
            stem = f[0]
            body = [f[1], nn.Sequential(f[2], f[3]), nn.Sequential(f[4], f[5]), nn.Sequential(f[6], f[7])]
            widths = [f[1][-1].block[5].out_features, f[3][-1].block[5].out_features,
                      f[5][-1].block[5].out_features, f[7][-1].block[5].out_features]
        else:
            raise JobError(f"unsupported backbone {arch!r}")
        self.stem = stem
        self.body = nn.ModuleList(body[:last])
        self.stages = stages
        self.channels = [widths[s - 1] for s in stages]
        self.all_channels = widths[:last]
        self.strides = [2 ** (s + 1) for s in stages]
        # FuseStyle after an early (stage 1) and a late (last used) stage
        self.style_early = FuseStyle(p, alpha, partner) if fusestyle else nn.Identity()
        self.style_late = FuseStyle(p, alpha, partner) if fusestyle and last > 1 else nn.Identity()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, all_stages: bool = False) -> list[torch.Tensor]:
        """Maps of ``self.stages`` (or of every computed stage 1..last with ``all_stages``)."""
        x = (x - self.mean) / self.std
        x = self.stem(x)
        out = []
        last = len(self.body)
        for i, block in enumerate(self.body, start=1):
            x = block(x)
            if i == 1:
                x = self.style_early(x)
            if i == last and last > 1:
                x = self.style_late(x)
            if all_stages or i in self.stages:
                out.append(x)
        return out


def build_backbone(cfg, weights_path: str | None = None) -> Backbone:
    return Backbone(cfg.backbone, cfg.backbone_stages, cfg.fusestyle, cfg.fusestyle_partner,
                    cfg.fusestyle_p, cfg.fusestyle_alpha, weights_path)
