"""The heatmap of one slide: stage 1 through the engine's tiled loop, then stage 2 on the top-K
patches, the slide score and the boxes that drove it.

:func:`heatmap_job` is a job returning a :class:`HeatmapResult`: the tumour map (a
:class:`~napari_histoai.engine.inference.MapsResult`, [1, H, W] float32 on a grid of
``downsample`` level-0 px per pixel from ``origin``), the slide ``score`` (mean stage-2
probability of the top-K patches), ``call`` (score >= the model's threshold) and ``top_k``:
per patch {y0, x0, y1, x1 (level-0 px), max_prob (stage 1), prob (stage 2)}, highest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ...engine.jobs import Progress
from ...errors import CancelFlag, JobError, check_cancel

__all__ = ["HeatmapResult", "heatmap_job", "window_maxima"]


@dataclass
class HeatmapResult:
    maps: object                          # MapsResult
    score: float = 0.0
    threshold: float = 0.5
    top_k: list = field(default_factory=list)

    @property
    def call(self) -> str:
        return "tumour" if self.score >= self.threshold else "no tumour"

    def summary(self) -> dict:
        m = self.maps
        return {"score": round(self.score, 4), "call": self.call, "threshold": round(self.threshold, 4),
                "top_k": self.top_k, "model": m.model, "mpp": m.mpp, "mpp_source": m.mpp_source,
                "heatmap_mpp": None if m.mpp is None else m.mpp * m.downsample,
                "heatmap_downsample": m.downsample, "origin": list(m.origin), "tiles": m.n_tiles,
                "tiles_skipped": m.n_tiles_skipped, "notes": list(m.notes)}


def window_maxima(m, win: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum of every ``win`` x ``win`` window of a 2D map (numpy or zarr [H, W]) on a grid of
    ``step``, the last row / column of windows flush with the edge: (max [n], y [n], x [n])."""
    H, W = int(m.shape[0]), int(m.shape[1])

    def starts(n):
        if n <= win:
            return [0]
        s = list(range(0, n - win + 1, step))
        return s if s[-1] == n - win else s + [n - win]

    xs = np.asarray(starts(W))
    vals, ys_out, xs_out = [], [], []
    for y in starts(H):
        band = np.asarray(m[y:y + win, :], np.float32).max(0)
        if W <= win:
            mx = np.asarray([band.max()])
        else:
            mx = np.lib.stride_tricks.sliding_window_view(band, win)[xs].max(1)
        vals.append(mx)
        ys_out.append(np.full(len(xs), y))
        xs_out.append(xs)
    return np.concatenate(vals), np.concatenate(ys_out), np.concatenate(xs_out)


def heatmap_job(image, model, region: Optional[Sequence[float]] = None, *, mpp: Optional[float] = None,
                store=None, cancel: Optional[CancelFlag] = None):
    """Tumour heatmap and slide score of ``image`` (a path, SlideImage or RGB array) with a
    :class:`~.model.HeatmapModel`."""
    from ...engine.inference import OVERVIEW_MAX_PIXELS, as_image, infer
    from ...engine.tissue import tissue_mask
    from ...io.image import SlideImage
    from .data import read_patch

    slide, opened = as_image(image, mpp)
    try:
        if slide.overview_cost() <= OVERVIEW_MAX_PIXELS and not tissue_mask(slide)[0].any():
            raise JobError(f"{slide.name}: no tissue found (nothing to score)")
        maps = yield from infer(slide, model, region, mpp=mpp, tissue_only=True, store=store, cancel=cancel)
        check_cancel(cancel)
        yield Progress(0, 0, "scoring the top patches")
        cfg = model.config
        win, step = cfg.patch // model.stride, max(1, (cfg.patch - cfg.overlap) // model.stride)
        m = maps.maps[0]
        vals, wy, wx = window_maxima(m, win, step)
        order = np.argsort(-vals, kind="stable")[: cfg.K]
        D = float(maps.downsample)        # level-0 px per map px
        f = D / model.stride              # level-0 px per model px
        assert isinstance(slide, SlideImage)
        level = slide.best_level_for_downsample(f)
        ds = slide.downsamples[level]
        oy, ox = maps.origin
        images, crops, boxes = [], [], []
        h0, w0 = slide.shape[:2]
        for i in order:
            y0, x0 = oy + wy[i] * D, ox + wx[i] * D
            y1, x1 = min(h0, y0 + win * D), min(w0, x0 + win * D)
            lbox = (int(y0 / ds), int(x0 / ds), max(int(y0 / ds) + 1, int(round(y1 / ds))),
                    max(int(x0 / ds) + 1, int(round(x1 / ds))))
            images.append(read_patch(slide, lbox, level, ds / f, cfg.patch))
            crop = np.zeros((win, win), np.float32)
            c = np.asarray(m[wy[i]:wy[i] + win, wx[i]:wx[i] + win], np.float32)
            crop[: c.shape[0], : c.shape[1]] = c
            crops.append(crop)
            boxes.append((float(y0), float(x0), float(y1), float(x1), float(vals[i])))
        probs = model.classify(np.stack(images), np.stack(crops))
        top = [{"y0": round(b[0], 1), "x0": round(b[1], 1), "y1": round(b[2], 1), "x1": round(b[3], 1),
                "max_prob": round(b[4], 4), "prob": round(float(p), 4)} for b, p in zip(boxes, probs)]
        score = float(np.mean(probs)) if len(probs) else 0.0
        return HeatmapResult(maps, score, model.threshold, top)
    finally:
        if opened:
            slide.close()
