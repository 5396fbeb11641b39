"""AC-Former network: backbone -> multi-scale features (d channels, GroupNorm) -> deformable
encoder -> two-stage point proposals (top-n become decoder queries + reference points) ->
decoder refining the points layer by layer; class + point heads on the encoder output and on
every decoder layer.

``ACFormer.forward(images)`` with images [B, 3, H, W] float RGB in [0, 1], H and W multiples of
the coarsest stride, returns::

    {"pred_logits": [B, Q, K], "pred_points": [B, Q, 2],        # last decoder layer
     "aux_outputs": [{"pred_logits", "pred_points"}, ...],       # earlier decoder layers
     "enc_outputs": {"pred_logits": [B, S, K], "pred_points": [B, S, 2]},   # all tokens
     "dense": [B, 3 + K, H/4, W/4]}   # only with cfg.dense_head (see .dense_head)

Points are (y, x) normalised to [0, 1] of the input (pixel = p * size - 0.5); logits are
per-class sigmoid logits (no "no object" logit: all classes low = empty).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .backbone import build_backbone
from .transformer import (
    MLP,
    DecoderLayer,
    EncoderLayer,
    inverse_sigmoid,
    sine_embed_points,
)

__all__ = ["ACFormer", "build_model"]


class ACFormer(nn.Module):
    def __init__(self, cfg, backbone_weights: str | None = None):
        super().__init__()
        self.cfg = cfg
        d, K, L = cfg.d_model, len(cfg.classes), cfg.n_levels
        self.backbone = build_backbone(cfg, backbone_weights)
        g = cfg.gn_groups
        proj = [nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(g, d)) for c in self.backbone.channels]
        c_in = self.backbone.channels[-1]
        for _ in range(cfg.extra_levels):
            proj.append(nn.Sequential(nn.Conv2d(c_in, d, 3, stride=2, padding=1), nn.GroupNorm(g, d)))
            c_in = d
        self.input_proj = nn.ModuleList(proj)
        self.level_embed = nn.Parameter(torch.zeros(L, d))
        nn.init.normal_(self.level_embed, std=0.02)
        args = (d, cfg.ffn_dim, cfg.dropout, L, cfg.n_heads, cfg.n_points)
        self.encoder = nn.ModuleList(EncoderLayer(*args) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*args) for _ in range(cfg.dec_layers))
        # two-stage: encoder output -> proposals
        self.enc_output = nn.Linear(d, d)
        self.enc_norm = nn.LayerNorm(d)
        self.query_pos = MLP(d, d, d, 2)  # sine(ref) -> query position embedding
        # heads: index 0 = encoder proposals, 1..D = decoder layers
        cls = nn.Linear(d, K)
        nn.init.constant_(cls.bias, -math.log((1 - 0.01) / 0.01))
        pt = MLP(d, d, 2, 3)
        nn.init.constant_(pt.layers[-1].weight, 0.0)
        nn.init.constant_(pt.layers[-1].bias, 0.0)
        n = cfg.dec_layers + 1
        self.class_heads = nn.ModuleList(copy.deepcopy(cls) for _ in range(n))
        self.point_heads = nn.ModuleList(copy.deepcopy(pt) for _ in range(n))
        self.dense_head = None
        if getattr(cfg, "dense_head", False):
            from .dense_head import DenseHead

            self.dense_head = DenseHead(self.backbone.all_channels[:3], K)

    @property
    def stride(self) -> int:
        return self.backbone.strides[-1] * 2 ** self.cfg.extra_levels

    def num_queries_for(self, h: int, w: int) -> int:
        """Top-n for an input of h x w px: ``num_queries`` per ``query_ref_size``^2 px."""
        return max(1, int(math.ceil(self.cfg.num_queries * h * w / self.cfg.query_ref_size ** 2)))

    def _pos_scale(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """Factor [2] (y, x) from normalised points to position-embedding units: 1 (relative to
        the h x w input, Deformable DETR) or input px / ``pos_scale`` (resolution-consistent)."""
        ps = getattr(self.cfg, "pos_scale", 0)
        if ps and ps > 0:
            return torch.tensor([h / ps, w / ps], dtype=like.dtype, device=like.device)
        return torch.ones(2, dtype=like.dtype, device=like.device)

    def backbone_maps(self, images: torch.Tensor, low_precision: torch.dtype | None = None
                      ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Backbone maps of ``cfg.backbone_stages`` and the dense head's output
        [B, 3 + K, H/4, W/4] (None without a dense head): one backbone pass. ``low_precision``
        (inference only, e.g. ``torch.bfloat16``): the convolutions run under autocast to it and
        the maps come back as float32 (the dense head's last layer runs in float32)."""
        with torch.autocast(images.device.type, dtype=low_precision, enabled=low_precision is not None):
            if self.dense_head is None:
                maps, dense = self.backbone(images), None
            else:
                every = self.backbone(images, all_stages=True)
                maps, dense = [every[s - 1] for s in self.backbone.stages], self.dense_head(every[:3])
        if low_precision is None:
            return maps, dense
        return [m.float() for m in maps], None if dense is None else dense.float()

    def project(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone maps -> projected multi-scale maps [B, d, H_l, W_l] (GroupNorm per image)."""
        maps = [p(f) for p, f in zip(self.input_proj, feats)]
        x = feats[-1]
        for p in self.input_proj[len(feats):]:
            x = p(x)
            maps.append(x)
        return maps

    def level_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Projected multi-scale maps [B, d, H_l, W_l] (GroupNorm per image)."""
        return self.project(self.backbone_maps(images)[0])

    def flatten_maps(self, maps: list[torch.Tensor], h: int, w: int):
        """Maps of an h x w px input -> src, pos [B, S, d]; shapes [(H_l, W_l)]."""
        shapes = [tuple(m.shape[-2:]) for m in maps]
        src = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        scale = self._pos_scale(h, w, src)
        pos = torch.cat([sine_embed_points(_centres(hl, wl, src) * scale, self.cfg.d_model) + self.level_embed[i]
                         for i, (hl, wl) in enumerate(shapes)], 0)
        return src, pos[None].expand(src.shape[0], -1, -1), shapes

    def features(self, images: torch.Tensor):
        """Flattened multi-scale features: src, pos [B, S, d]; shapes [(H_l, W_l)]."""
        return self.flatten_maps(self.level_maps(images), *images.shape[-2:])

    def forward(self, images: torch.Tensor, num_queries: int | None = None,
                low_precision: torch.dtype | None = None) -> dict:
        h, w = images.shape[-2:]
        feats, dense = self.backbone_maps(images, low_precision)
        src, pos, shapes = self.flatten_maps(self.project(feats), h, w)
        out = self.decode(src, pos, shapes, h, w, num_queries)
        if dense is not None:
            out["dense"] = dense
        return out

    def decode(self, src: torch.Tensor, pos: torch.Tensor, shapes: list, h: int, w: int,
               num_queries: int | None = None) -> dict:
        """Encoder, two-stage proposals and decoder on flattened features of h x w px inputs."""
        b = src.shape[0]
        L = len(shapes)
        centres = torch.cat([_centres(hl, wl, src) for hl, wl in shapes], 0)  # [S, 2] (y, x)
        ref = centres[None, :, None, :].expand(b, -1, L, -1)
        memory = src
        for layer in self.encoder:
            memory = layer(memory, pos, ref, shapes)
        # --- two-stage proposals from every token
        out_mem = self.enc_norm(self.enc_output(memory))
        enc_logits = self.class_heads[0](out_mem)
        enc_points = (self.point_heads[0](out_mem) + inverse_sigmoid(centres)[None]).sigmoid()
        n = min(num_queries or self.num_queries_for(h, w), memory.shape[1])
        top = enc_logits.max(-1)[0].topk(n, dim=1)[1]  # [B, n]
        tgt = torch.gather(out_mem, 1, top[..., None].expand(-1, -1, out_mem.shape[-1])).detach()
        refp = torch.gather(enc_points, 1, top[..., None].expand(-1, -1, 2)).detach()
        # --- decoder: refine points layer by layer
        pscale = self._pos_scale(h, w, src)
        outs = []
        for i, layer in enumerate(self.decoder, start=1):
            qpos = self.query_pos(sine_embed_points(refp * pscale, self.cfg.d_model))
            tgt = layer(tgt, qpos, refp[:, :, None, :].expand(-1, -1, L, -1), memory, shapes)
            pts = (self.point_heads[i](tgt) + inverse_sigmoid(refp)).sigmoid()
            outs.append({"pred_logits": self.class_heads[i](tgt), "pred_points": pts})
            refp = pts.detach()
        result = dict(outs[-1]) if outs else {"pred_logits": enc_logits, "pred_points": enc_points}
        result["aux_outputs"] = outs[:-1]
        result["enc_outputs"] = {"pred_logits": enc_logits, "pred_points": enc_points}
        return result


def _centres(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel centres of an h x w map, (y, x) normalised to [0, 1] -> [h*w, 2]."""
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).view(-1, 2)


def build_model(cfg, backbone_weights: str | None = None) -> ACFormer:
    return ACFormer(cfg, backbone_weights)
