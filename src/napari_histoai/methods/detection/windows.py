"""Windowed inference: one backbone pass over a large tile, the transformer on small windows.

A compact AC-Former is only right at the input size it was trained at (its ``window``, e.g.
128 px): the sine position embeddings and the point refinement (deltas in inverse-sigmoid space)
are relative to the input. Feeding it lone 128 px tiles recomputes the backbone on every overlap
and runs many tiny batches. Here the backbone runs once over a large tile (it is translation
equivariant: BatchNorm in eval mode, FuseStyle off), each window's part of the stage maps is cut
out and projected exactly as a lone window would be (1x1 convolution on the whole map, GroupNorm
per window, the extra stride-2 levels computed on the window's own cut), and the encoder/decoder
run on all windows of all tiles at once with the window-relative embeddings the model was trained
with. The only difference from lone windows is that the backbone sees real image context at
window borders instead of zero padding.

Window starts are multiples of ``step = window - overlap`` from the tile origin; ``step`` must be
a multiple of the coarsest backbone stride and ``window`` of the model stride, so every cut falls
on whole feature pixels. Cores split the overlaps in the middle (as ``engine.tiling``), so each
point is reported by exactly one window.
"""

from __future__ import annotations

import math

import torch

__all__ = ["window_layout", "check_window", "windowed_predict", "SEAM_MERGE_PX"]

SEAM_MERGE_PX = 3.0  # the same nucleus localised on either side of a window seam (as the detect job's tiles)


def window_layout(size: int, window: int, step: int) -> tuple[int, list[int], list[tuple[int, int]]]:
    """Along one axis of a tile of ``size`` px -> (padded size, window starts, window cores).

    The padded size is ``window + k * step`` >= size; cores [c0, c1) in px coordinates (pixel
    centres at integers) partition [-0.5, size - 0.5), the tile's own extent: the padding beyond
    ``size`` belongs to no core."""
    k = max(0, math.ceil((size - window) / step))
    starts = [i * step for i in range(k + 1)]
    cuts = [-0.5] + [float((starts[i + 1] + s + window) // 2) for i, s in enumerate(starts[:-1])] + [size - 0.5]
    cores = [(cuts[i], cuts[i + 1]) for i in range(k + 1)]
    return window + k * step, starts, cores


def check_window(model, window: int, overlap: int) -> None:
    """Raise ``ValueError`` unless ``window``/``overlap`` cut whole feature pixels of ``model``."""
    step = window - overlap
    coarse = max(model.backbone.strides)
    if window <= 0 or overlap < 0 or step <= 0:
        raise ValueError(f"need window > overlap >= 0, got {window}, {overlap}")
    if window % model.stride or step % coarse:
        raise ValueError(f"window {window} must be a multiple of {model.stride} and window - overlap "
                         f"({step}) of {coarse} px")


def _window_maps(model, image: torch.Tensor, window: int, origins: list[tuple[int, int]], low_precision=None):
    """image [1, 3, H, W] -> (per level, the projected maps of every window [n, d, h_l, w_l];
    the dense head's output on the whole image [1, 3 + K, H/4, W/4] or None)."""
    feats, dense = model.backbone_maps(image, low_precision)
    nb = len(feats)
    strides = model.backbone.strides

    def cut(m: torch.Tensor, s: int) -> torch.Tensor:
        w = window // s
        return torch.cat([m[:, :, y // s:y // s + w, x // s:x // s + w] for y, x in origins], 0)

    maps = []
    for lvl in range(nb):
        conv, norm = model.input_proj[lvl][0], model.input_proj[lvl][1]
        maps.append(norm(cut(conv(feats[lvl]), strides[lvl])))
    x = cut(feats[-1], strides[-1])
    for proj in model.input_proj[nb:]:
        x = proj(x)
        maps.append(x)
    return maps, dense


@torch.no_grad()
def windowed_predict(model, images: list[torch.Tensor], sizes: list[tuple[int, int]], window: int,
                     overlap: int, max_windows: int = 64, dense: bool = False,
                     low_precision: torch.dtype | None = None) -> list[tuple]:
    """Predict on tiles with the transformer on ``window`` px windows.

    images: tiles [3, H_i, W_i] float RGB in [0, 1], padded to the layout sizes of ``sizes``
    (see :func:`window_layout`); sizes: the real (h_i, w_i) of each tile. Returns per
    tile (points [N, 2] (y, x) px in the tile, probs [N, K]) of the last decoder layer, already
    restricted to the window cores (nothing in the padding), and the window index of each point.
    ``max_windows`` bounds the transformer batch (memory). With ``dense`` each tuple also holds
    the dense head's output on the whole padded tile [1, 3 + K, H_i/4, W_i/4] (None without a head).
    ``low_precision``: the backbone's dtype under autocast (:meth:`ACFormer.backbone_maps`).
    """
    step = window - overlap
    check_window(model, window, overlap)
    per_tile_maps, per_tile_windows, per_tile_dense = [], [], []
    for img, (h, w) in zip(images, sizes):
        hp, ys, ycores = window_layout(h, window, step)
        wp, xs, xcores = window_layout(w, window, step)
        if tuple(img.shape[-2:]) != (hp, wp):
            raise ValueError(f"tile of {h} x {w} px must be padded to {hp} x {wp}, got {tuple(img.shape[-2:])}")
        wins = [(y, x, yc, xc) for y, yc in zip(ys, ycores) for x, xc in zip(xs, xcores)]
        x_in = img[None].contiguous(memory_format=torch.channels_last)
        maps, dense_out = _window_maps(model, x_in, window, [(y, x) for y, x, _, _ in wins], low_precision)
        per_tile_maps.append(maps)
        per_tile_dense.append(dense_out)
        per_tile_windows.append(wins)
    n_levels = len(per_tile_maps[0])
    all_maps = [torch.cat([m[lvl] for m in per_tile_maps], 0) for lvl in range(n_levels)]
    owners = [(i, win) for i, wins in enumerate(per_tile_windows) for win in wins]
    pts_out, prob_out = [], []
    for a in range(0, len(owners), max_windows):
        src, pos, shapes = model.flatten_maps([m[a:a + max_windows] for m in all_maps], window, window)
        out = model.decode(src, pos, shapes, window, window)
        pts_out.append(out["pred_points"] * window - 0.5)
        prob_out.append(out["pred_logits"].sigmoid())
    pts_all, probs_all = torch.cat(pts_out, 0), torch.cat(prob_out, 0)  # [n_windows, Q, 2 / K]
    results = [([], [], []) for _ in images]
    for j, (i, (y, x, (cy0, cy1), (cx0, cx1))) in enumerate(owners):
        p = pts_all[j] + torch.tensor([y, x], dtype=pts_all.dtype, device=pts_all.device)
        keep = (p[:, 0] >= cy0) & (p[:, 0] < cy1) & (p[:, 1] >= cx0) & (p[:, 1] < cx1)
        results[i][0].append(p[keep])
        results[i][1].append(probs_all[j][keep])
        results[i][2].append(torch.full((int(keep.sum()),), j, dtype=torch.long, device=p.device))
    out = [(torch.cat(p, 0), torch.cat(q, 0), torch.cat(k, 0)) for p, q, k in results]
    return [o + (d,) for o, d in zip(out, per_tile_dense)] if dense else out
