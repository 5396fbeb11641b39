"""A trained heatmap model: the engine's dense-map protocol for stage 1, plus stage 2.

:class:`HeatmapModel` implements :class:`~napari_histoai.engine.protocols.DenseMap` (channel
``tumour``; ``stride`` model px per map px) so :func:`~napari_histoai.engine.inference.infer`
tiles, skips background and stitches it like any model; :meth:`classify` is stage 2 on the
top-K patches. Saved as a model folder (kind ``tumour-heatmap``): one safetensors file with
``seg.*`` (stage 1) and ``cls.*`` (stage 2) tensors, and a JSON config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import JobError

__all__ = ["KIND", "HeatmapModel", "save_heatmap_model", "load_heatmap_model"]

KIND = "tumour-heatmap"


class HeatmapModel:
    """Stage 1 (dense map) and stage 2 (slide classifier) of a trained heatmap model."""

    channels = ["tumour"]
    batch_size = 4

    def __init__(self, seg, cls, config, threshold: float = 0.5, name: str = "heatmap", device="cpu"):
        self.seg, self.cls, self.config = seg.to(device).eval(), cls.to(device).eval(), config
        self.threshold, self.name, self.device = float(threshold), name, device
        self.mpp = float(config.mpp)
        self.stride = int(config.stride)
        self.tile_size = max(4 * config.patch, 1024) // 16 * 16
        self.overlap = 64

    def predict_maps(self, tiles: Sequence[np.ndarray]) -> list:
        """RGB uint8 tiles [h, w, 3] -> per tile float32 [1, ceil(h / stride), ceil(w / stride)]."""
        import torch

        out = []
        with torch.no_grad():
            for t in tiles:
                h, w = t.shape[:2]
                H, W = -(-h // 16) * 16, -(-w // 16) * 16
                pad = np.full((H, W, 3), 242, np.uint8)
                pad[:h, :w] = t[..., :3]
                x = torch.from_numpy(pad).to(self.device).permute(2, 0, 1)[None].float()
                p = torch.sigmoid(self.seg(x))[0].cpu().numpy()
                out.append(p[:, : -(-h // self.stride), : -(-w // self.stride)].astype(np.float32))
        return out

    def classify(self, images: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Stage-2 patch probabilities [K] of patches [K, P, P, 3] uint8 with maps [K, P/s, P/s]."""
        import torch

        from .stage2 import stage2_inputs

        x = torch.from_numpy(stage2_inputs(images, probs)).to(self.device).float() / 255.0
        with torch.no_grad():
            return torch.sigmoid(self.cls(x)).cpu().numpy()


def save_heatmap_model(result, folder: str | os.PathLike, training: Optional[dict] = None) -> Path:
    """Save a :class:`~.train.HeatmapTrainResult` as a model folder (atomic)."""
    from ...models import save_checkpoint

    state = {f"seg.{k}": v for k, v in result.seg_state.items()}
    state.update({f"cls.{k}": v for k, v in result.cls_state.items()})
    cfg = {"kind": KIND, "architecture": {"width": result.config.width, "stride": result.config.stride,
                                          "fusestyle": result.config.fusestyle,
                                          "stage2_members": result.config.stage2_members},
           "channels": ["tumour"], "mpp": result.config.mpp, "config": result.config.as_dict(),
           "threshold": result.threshold,
           "training": dict(training or {}, rounds=result.rounds, best_round=result.best_round,
                            slides=result.slides, seconds=round(result.seconds, 1))}
    return save_checkpoint(folder, state, cfg)


def load_heatmap_model(name_or_path: str | os.PathLike, device="cpu") -> HeatmapModel:
    """A saved heatmap model; one-line ``JobError`` for other kinds or mismatched weights."""
    from ...models import load_checkpoint, load_state_strict, resolve_model
    from .config import HeatmapConfig
    from .network import ClassifierEnsemble, PatchSegNet

    state, cfg = load_checkpoint(name_or_path, KIND)
    try:
        conf = HeatmapConfig(**cfg["config"])
    except (TypeError, KeyError) as e:
        raise JobError(f"heatmap model config is malformed: {e}") from None
    seg = PatchSegNet(conf.width, conf.stride, conf.fusestyle)
    cls = ClassifierEnsemble(conf.stage2_members)
    load_state_strict(seg, {k[4:]: v for k, v in state.items() if k.startswith("seg.")}, "heatmap stage-1")
    load_state_strict(cls, {k[4:]: v for k, v in state.items() if k.startswith("cls.")}, "heatmap stage-2")
    thr = cfg.get("threshold", 0.5)
    if not isinstance(thr, (int, float)) or not 0 <= thr <= 1:
        raise JobError("heatmap model config: threshold must be a number in [0, 1]")
    return HeatmapModel(seg, cls, conf, thr, name=resolve_model(name_or_path, KIND).name, device=device)
