"""The adapted model a user runs: Mask R-CNN weights from CyC-PDAM training behind the engine's
InstanceSegmenter protocol, saved as safetensors + JSON (kind ``cycpdam-segmenter``).

Only the detector and the semantic head are saved; the discriminators exist for training only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import JobError
from .config import AdaptConfig

__all__ = ["KIND", "BUNDLED", "AdaptedSegmenter", "save_adapted_model", "load_adapted_model", "paste_instances"]

KIND = "cycpdam-segmenter"
BUNDLED = "cycpdam-he"


def paste_instances(shape: tuple, boxes: np.ndarray, scores: np.ndarray, masks: np.ndarray,
                    score_threshold: float = 0.5, mask_threshold: float = 0.5, min_area: int = 10) -> np.ndarray:
    """Instance labels [H, W] int32 from detections: ``boxes`` [N, 4] (x0, y0, x1, y1 px),
    ``scores`` [N], ``masks`` [N, m, m] probabilities in box coordinates. Higher scores paint
    first; a later mask only fills unclaimed pixels and is dropped when less than ``min_area``
    px (or half of its own mask) is left."""
    import cv2

    h, w = shape
    out = np.zeros((h, w), np.int32)
    order = np.argsort(-scores, kind="stable")
    next_id = 1
    for i in order:
        if scores[i] < score_threshold:
            break
        x0, y0, x1, y1 = boxes[i]
        ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        ix1, iy1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        bw, bh = int(np.ceil(x1)) - int(np.floor(x0)), int(np.ceil(y1)) - int(np.floor(y0))
        if ix1 <= ix0 or iy1 <= iy0 or bw < 1 or bh < 1:
            continue
        m = cv2.resize(masks[i], (bw, bh), interpolation=cv2.INTER_LINEAR) >= mask_threshold
        oy, ox = iy0 - int(np.floor(y0)), ix0 - int(np.floor(x0))
        m = m[oy:oy + iy1 - iy0, ox:ox + ix1 - ix0]
        region = out[iy0:iy1, ix0:ix1]
        free = m & (region == 0)
        n = int(free.sum())
        if n < min_area or n < 0.5 * max(1, int(m.sum())):
            continue
        region[free] = next_id
        next_id += 1
    return out


class AdaptedSegmenter:
    """InstanceSegmenter: RGB uint8 tiles at ``mpp`` µm/px -> instance labels per tile."""

    def __init__(self, net, config: AdaptConfig, name: str = "adapted", device="cpu"):
        import torch

        from .network import set_test_proposals

        self.config = config
        self.name = name
        self.mpp = float(config.mpp)
        self.tile_size = int(config.tile_size)
        self.overlap = int(config.overlap)
        self.device = torch.device(device)
        self.detector = net.detector.to(self.device).eval()
        set_test_proposals(self.detector, config.rpn_test_pre, config.rpn_test_post)
        self.batch_size = 2

    def segment_tiles(self, tiles: Sequence[np.ndarray]) -> list:
        import torch
        import torch.nn.functional as F

        from .network import detect, normalise

        out = []
        for i in range(0, len(tiles), self.batch_size):
            chunk = tiles[i:i + self.batch_size]
            hs, ws = [t.shape[0] for t in chunk], [t.shape[1] for t in chunk]
            H, W = -(-max(hs) // 32) * 32, -(-max(ws) // 32) * 32
            xs = []
            for t in chunk:
                x = torch.from_numpy(np.array(t[..., :3], dtype=np.uint8, copy=True)).permute(2, 0, 1)
                xs.append(F.pad(normalise(x[None]), (0, W - t.shape[1], 0, H - t.shape[0]), mode="replicate"))
            x = torch.cat(xs).to(self.device)
            # masks only for the boxes that will be kept (the mask head is most of the RoI cost)
            self.detector.roi_heads.score_thresh = float(self.config.score_threshold)
            with torch.inference_mode():
                dets = detect(self.detector, x)
            for t, d in zip(chunk, dets):
                out.append(paste_instances(
                    t.shape[:2], d["boxes"].float().cpu().numpy(), d["scores"].float().cpu().numpy(),
                    d["masks"][:, 0].float().cpu().numpy(), self.config.score_threshold,
                    self.config.mask_threshold, self.config.min_area))
        return out


def _weights(net) -> dict:
    state = {f"detector.{k}": v for k, v in net.detector.state_dict().items()}
    state.update({f"sem_head.{k}": v for k, v in net.sem_head.state_dict().items()})
    return state


def save_adapted_model(net, config: AdaptConfig, folder: str | os.PathLike, *, training: Optional[dict] = None,
                       metrics: Optional[dict] = None) -> Path:
    """Save ``net`` (a PDAMNet) and ``config`` to ``folder`` (atomic; see models.save_checkpoint)."""
    from ...models import save_checkpoint

    cfg = {"kind": KIND, "architecture": config.arch, "config": config.to_dict(), "mpp": config.mpp,
           "training": training or {}, "metrics": metrics or {}}
    return save_checkpoint(folder, _weights(net), cfg)


def load_adapted_model(name_or_path: str | os.PathLike = BUNDLED, device="cpu") -> AdaptedSegmenter:
    """An :class:`AdaptedSegmenter` from a bundled/user name or a folder; one-line errors for
    other kinds of models and weights that do not fit."""
    import torch

    from ...models import load_checkpoint, load_state_strict
    from .network import build

    state, cfg = load_checkpoint(name_or_path, KIND)
    try:
        config = AdaptConfig.from_dict({**cfg.get("config", {}), "arch": cfg["architecture"]})
        net = build(config.arch)
    except (KeyError, TypeError, ValueError) as e:
        raise JobError(f"model {name_or_path} has an unreadable architecture ({e})") from None
    holder = torch.nn.ModuleDict({"detector": net.detector, "sem_head": net.sem_head})
    load_state_strict(holder, state, f"adapted model {Path(str(name_or_path)).name}")
    return AdaptedSegmenter(net, config, name=Path(str(name_or_path)).name, device=device)
