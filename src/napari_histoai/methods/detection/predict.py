"""Inference with a trained AC-Former (the global / EMA network, last decoder layer).

``load_acformer(name_or_path, device)`` returns an :class:`ACFormerDetector`, a point detector
of the engine's protocol (:mod:`napari_histoai.engine.protocols`): the engine's ``infer`` does
the tiling, resampling to ``detector.mpp`` and seam stitching, and calls its ``prepare`` hook,
which matches the slide's stain to the training stain.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import JobError
from .configs import ACFormerConfig

__all__ = ["KIND", "ACFormerDetector", "load_acformer", "predict_batch", "postprocess", "merge_close_points"]

KIND = "acformer-detector"
DENSE_PEAK_MIN = 0.05  # dense head peaks below this heat are not fused (they could not pass any threshold)


@torch.no_grad()
def predict_batch(model, images: torch.Tensor, num_queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """images [B, 3, H, W] in [0, 1] (H, W multiples of model.stride) -> (points [B, Q, 2] (y, x)
    px, probs [B, Q, K]) of the last decoder layer."""
    return _points_probs(model(images, num_queries=num_queries), images)


def _points_probs(out: dict, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output for ``images`` [B, 3, H, W] -> (points [B, Q, 2] (y, x) px, probs [B, Q, K])."""
    h, w = images.shape[-2:]
    pts = out["pred_points"] * torch.tensor([h, w], dtype=images.dtype, device=images.device) - 0.5
    return pts, out["pred_logits"].sigmoid()


def postprocess(points: np.ndarray, probs: np.ndarray, threshold: float, shape: tuple,
                min_distance: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep proposals with max class prob >= threshold inside ``shape`` (h, w); optionally merge
    points closer than ``min_distance`` px (keeping the higher score). -> (yx, cls, score)."""
    score = probs.max(-1)
    cls = probs.argmax(-1).astype(np.int64)
    h, w = shape
    keep = (score >= threshold) & (points[:, 0] >= -0.5) & (points[:, 0] < h - 0.5) \
        & (points[:, 1] >= -0.5) & (points[:, 1] < w - 0.5)
    points, cls, score = merge_close_points(points[keep], cls[keep], score[keep], min_distance)
    return points.astype(np.float32), cls, score.astype(np.float32)


def merge_close_points(points: np.ndarray, cls: np.ndarray, score: np.ndarray, min_distance: float):
    """Of points closer than ``min_distance`` px keep the higher score (0 = off)."""
    from ...engine.merge import suppress_close

    keep = suppress_close(points, score, min_distance)
    return points[keep], cls[keep], score[keep]


def _tensor(tile: np.ndarray) -> torch.Tensor:
    """RGB uint8 [H, W, >=3] -> float [3, H, W] in [0, 1]."""
    return torch.from_numpy(np.array(tile[..., :3], copy=True)).permute(2, 0, 1).float().div_(255)


def _pad(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Pad [3, h, w] at the bottom/right to [3, H, W] (reflect; replicate where reflect cannot)."""
    ph, pw = H - x.shape[1], W - x.shape[2]
    if not (ph or pw):
        return x
    mode = "reflect" if ph < x.shape[1] and pw < x.shape[2] else "replicate"
    return F.pad(x[None], (0, pw, 0, ph), mode=mode)[0]


def _to_batch(tiles: Sequence[np.ndarray], stride: int, device) -> tuple[torch.Tensor, list]:
    """Pad tiles (reflect) to a common size that is a multiple of ``stride`` -> [B, 3, H, W]."""
    hs = [t.shape[0] for t in tiles]
    ws = [t.shape[1] for t in tiles]
    H = int(np.ceil(max(hs) / stride) * stride)
    W = int(np.ceil(max(ws) / stride) * stride)
    return torch.stack([_pad(_tensor(t), H, W) for t in tiles]).to(device), list(zip(hs, ws))


class ACFormerDetector:
    """A loaded AC-Former (the engine's point-detector protocol). ``batch_size`` tiles per
    forward pass.

    The network runs on ``window`` px inputs (its config's ``tile_size``: the view size it was
    trained at) overlapping by ``window_overlap`` px. With ``windowed`` (config default) the detect job
    reads tiles of ``window + 4 * (window - window_overlap)`` px, the backbone runs once per
    tile and the transformer on its 5 x 5 windows (:mod:`.windows`); otherwise every window is a
    tile of its own (the slower reference path, same transformer inputs).
    """

    WINDOWS_PER_SIDE = 5

    def __init__(self, model, cfg: ACFormerConfig, name: str = "acformer", device="cpu",
                 threshold: float | None = None, batch_size: int = 4, windowed: bool | None = None,
                 fast: bool = False, precision: str = "auto", tta: bool = False):
        from ...engine.devices import inference_dtype

        if fast and model.dense_head is None:
            raise JobError(f"fast detection needs a model with a dense head; {name} has none")
        if tta and model.dense_head is None:
            raise JobError(f"test-time flips need a model with a dense head; {name} has none")
        self.model = model.eval().to(device)
        # NHWC convolutions are ~10% faster on CPU (oneDNN); the weights are unchanged
        self.model.backbone.to(memory_format=torch.channels_last)
        self.cfg, self.name, self.device = cfg, name, torch.device(device)
        self.fast = bool(fast)
        self.tta = bool(tta)  # the dense head averaged over 4 flips of each tile (dense_head.flip_averaged)
        self.low_precision = inference_dtype(precision, self.device)
        self.classes = list(cfg.classes)
        self.mpp = cfg.mpp
        self.threshold = cfg.score_threshold if threshold is None else float(threshold)
        # an image matched to the training stain is detected at threshold + shift (a threshold given
        # here is used as it is)
        self.matched_shift = float(getattr(cfg, "stain_matched_shift", 0.0) or 0.0) if threshold is None else 0.0
        self.min_distance = float(cfg.min_distance)
        self.batch_size = batch_size
        self.windowed = bool(getattr(cfg, "windowed", False) if windowed is None else windowed)
        self.set_window(int(cfg.tile_size), int(cfg.overlap))
        target = getattr(cfg, "stain_target", None)
        self.stain_target = None if target is None else np.asarray(target, np.float64)
        spread = getattr(cfg, "stain_spread", None)
        self.stain_spread = None if spread is None else np.asarray(spread, np.float64)
        self.stain_radius = getattr(cfg, "stain_radius", None)  # None: every image is matched
        self.stain_lut = None

    def prepare(self, thumbnail: np.ndarray, tissue: np.ndarray) -> None:
        """Engine hook, once per image or slide: match its stain (OD statistics of the tissue in
        its thumbnail) to the training images' (no-op for models without a stain target)."""
        from ..stain import od_stats

        self.adapt_stain(od_stats(thumbnail, tissue) if self.stain_target is not None else None)

    def adapt_stain(self, source_stats) -> None:
        """Match the tiles that follow to the training stain: ``source_stats`` = OD statistics
        [2, 3] of the image or slide being processed (:mod:`..stain`); None = no mapping. No-op
        for models without a stain target, and for an image within the model's stain radius of
        it (the training stains: :func:`..stain.matching_lut`)."""
        from ..stain import matching_lut

        self.stain_lut = None
        if self.stain_target is not None and source_stats is not None:
            self.stain_lut = matching_lut(source_stats, self.stain_target, self.stain_spread, self.stain_radius)

    def set_window(self, window: int, overlap: int) -> None:
        """Set the network's input size and overlap (px); derives the detect job's ``tile_size``
        and ``overlap``. Falls back to lone windows if the sizes do not cut whole feature pixels."""
        from .windows import check_window

        self.window, self.window_overlap = int(window), int(overlap)
        self.use_windows = self.windowed
        if self.use_windows:
            try:
                check_window(self.model, self.window, self.window_overlap)
            except ValueError:
                self.use_windows = False
        step = self.window - self.window_overlap
        self.tile_size = self.window + (self.WINDOWS_PER_SIDE - 1) * step if self.use_windows else self.window
        self.overlap = self.window_overlap

    def predict_tiles(self, tiles: Sequence[np.ndarray]) -> list:
        results = []
        for i in range(0, len(tiles), self.batch_size):
            chunk = [np.asarray(t) for t in tiles[i:i + self.batch_size]]
            for t in chunk:
                if t.ndim != 3 or t.shape[2] < 3:
                    raise JobError(f"detector needs RGB tiles [H, W, 3], got shape {t.shape}")
            if self.stain_lut is not None:
                from ..stain import apply_lut

                chunk = [apply_lut(t, self.stain_lut) for t in chunk]
            if self.head_only:
                out = self._head_only(chunk)
            else:
                out = self._windowed(chunk) if self.use_windows else self._lone(chunk)
            for (p, q), t in zip(out, chunk):
                results.append(postprocess(p, q, self.operating_threshold, t.shape[:2], self.min_distance))
        return results

    @property
    def operating_threshold(self) -> float:
        """The score threshold for the current image: ``threshold``, plus the model's
        ``stain_matched_shift`` when the image is matched to the training stain."""
        if self.stain_lut is None or not self.matched_shift:
            return self.threshold
        return float(min(0.99, max(0.01, self.threshold + self.matched_shift)))

    @property
    def head_only(self) -> bool:
        """The dense head's peaks are the detections (fast mode, test-time flips, or a model with
        ``dense_mix`` 1): the transformer is skipped."""
        return self.model.dense_head is not None and (self.fast or self.tta or self.cfg.dense_mix >= 1)

    @property
    def dense_mix(self) -> float:
        """Weight of the dense head in the fused scores (0 without a head: queries only)."""
        return float(self.cfg.dense_mix) if self.model.dense_head is not None else 0.0

    def _fuse(self, p: np.ndarray, q: np.ndarray, dense, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
        """Query points p [N, 2] / probs q [N, K] of one tile fused with its dense head peaks
        (``dense`` [1, 3 + K, H/4, W/4], peaks inside ``shape``) -> (points, probs)."""
        from .dense_head import dense_peaks, fuse_points

        dp, dq = dense_peaks(dense, DENSE_PEAK_MIN)[0]
        inside = (dp[:, 0] < shape[0] - 0.5) & (dp[:, 1] < shape[1] - 0.5)
        return fuse_points(p, q, dp[inside], dq[inside], self.dense_mix)

    def _head_only(self, chunk: list) -> list:
        """``dense_mix`` 1: the dense head's peaks are the detections, so the transformer is
        skipped: one backbone + head pass per tile (four with ``tta``: the head's maps averaged over
        flips of the tile) -> per tile (points [N, 2] px, probs [N, K])."""
        from ...engine.merge import suppress_close
        from .dense_head import dense_peaks, flip_averaged
        from .windows import SEAM_MERGE_PX

        x, shapes = _to_batch(chunk, self.model.stride, self.device)

        def head(images: torch.Tensor) -> torch.Tensor:
            return self.model.backbone_maps(images.contiguous(memory_format=torch.channels_last), self.low_precision)[1]
        with torch.no_grad():
            dense = flip_averaged(head, x) if self.tta else head(x)
        out = []
        for (dp, dq), (h, w) in zip(dense_peaks(dense, DENSE_PEAK_MIN), shapes):
            k = (dp[:, 0] < h - 0.5) & (dp[:, 1] < w - 0.5) & (dq.max(-1) >= self.operating_threshold)
            k[k] = suppress_close(dp[k], dq[k].max(-1), SEAM_MERGE_PX)  # as the fused paths do
            out.append((dp[k], dq[k]))
        return out

    def _lone(self, chunk: list) -> list:
        """Every tile through the whole network -> per tile (points [N, 2] px, probs [N, K])."""
        x, _ = _to_batch(chunk, self.model.stride, self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            out = self.model(x, low_precision=self.low_precision)
        res = [(p.cpu().numpy(), q.float().cpu().numpy()) for p, q in zip(*_points_probs(out, x))]
        if self.dense_mix > 0:
            res = [self._fuse(p, q, out["dense"][j:j + 1], t.shape[:2]) for j, ((p, q), t) in enumerate(zip(res, chunk))]
        return res

    def _windowed(self, chunk: list) -> list:
        """One backbone pass per tile, the transformer on its windows; proposals below the
        threshold dropped and seam duplicates merged -> per tile (points [N, 2] px, probs [N, K])."""
        from ...engine.merge import suppress_close
        from .windows import SEAM_MERGE_PX, window_layout, windowed_predict

        step = self.window - self.window_overlap
        shapes = [t.shape[:2] for t in chunk]
        xs = [_pad(_tensor(t), window_layout(h, self.window, step)[0], window_layout(w, self.window, step)[0])
              .to(self.device) for t, (h, w) in zip(chunk, shapes)]
        out = []
        fuse = self.dense_mix > 0
        for p, q, win, dense in windowed_predict(self.model, xs, shapes, self.window, self.window_overlap, dense=True,
                                                 low_precision=self.low_precision):
            p, q, win = p.cpu().numpy(), q.float().cpu().numpy(), win.cpu().numpy()
            if fuse:  # fused points belong to no one window: any two closer than the seam radius merge
                p, q = self._fuse(p, q, dense, shapes[len(out)])
                win = None
            k = q.max(-1) >= self.operating_threshold
            k[k] = suppress_close(p[k], q[k].max(-1), SEAM_MERGE_PX, groups=None if win is None else win[k])
            out.append((p[k], q[k]))
        return out


def model_from_state(state: dict, config: dict, what: str = "AC-Former"):
    """Build the network from a checkpoint config and load its weights strictly."""
    from ...models import load_state_strict
    from .model import build_model

    arch = config.get("architecture")
    if not isinstance(arch, dict):
        raise JobError(f"{what} config has no 'architecture'")
    try:
        cfg = ACFormerConfig.from_dict(arch)
    except JobError as e:
        raise JobError(f"{what}: {e}") from None
    model = build_model(cfg)
    load_state_strict(model, state, what)
    return model.eval(), cfg


def load_acformer(name_or_path: str | os.PathLike, device="auto", threshold: float | None = None,
                  fast: bool = False, precision: str = "auto", tta: bool = False) -> ACFormerDetector:
    """Load a model folder (or bundled / user model name) of kind ``acformer-detector``;
    ``fast``: the dense head alone (:attr:`ACFormerDetector.head_only`); ``tta``: the dense head
    alone, averaged over 4 flips of each tile (about 3x the time); ``precision``: see
    :func:`...engine.devices.inference_dtype`."""
    from ...engine.devices import pick_device
    from ...models import load_checkpoint

    state, config = load_checkpoint(name_or_path, KIND)
    model, cfg = model_from_state(state, config, f"model {name_or_path}")
    dev = pick_device(device) if isinstance(device, str) else device
    name = config.get("name") or os.path.basename(os.path.normpath(str(name_or_path)))
    return ACFormerDetector(model, cfg, name=name, device=dev, threshold=threshold, fast=fast, precision=precision,
                           tta=tta)
