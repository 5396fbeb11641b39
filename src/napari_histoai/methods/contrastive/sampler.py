"""Entropy-based patch sampler (paper sec. 2.3, eq. 1-4).

Candidate patches are the windows of a fixed averaging convolution (kernel = patch size,
stride 20) over the confidence maps. For every image b and channel k the sampler draws
``n`` candidates with weights ``max(1 - B_k, 0.001)`` (``B_k`` = mean binary entropy of the
window, in bits) and makes each one positive with probability ``A_k`` (= mean confidence of
the window), negative otherwise. ``uniform=True`` replaces the entropy weights with equal
weights (ablation). Everything here runs under ``torch.no_grad``: the gradient flows through
the patches cut from the attended image, not through the sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-6


def binary_entropy(c: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of Bernoulli(c), elementwise; 0 at c in {0, 1}."""
    c = c.clamp(EPS, 1 - EPS)
    return -(c * torch.log2(c) + (1 - c) * torch.log2(1 - c))


def window_means(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """[B, K, H, W] -> [B, K, h, w] means over size x size windows (the paper's averaging conv)."""
    return F.avg_pool2d(x, kernel_size=size, stride=stride)


@dataclass
class Samples:
    """Sampled patches, one row each: image ``b``, channel ``k``, top-left ``(y, x)`` px and
    ``positive`` (bool). All tensors are [N] on the CPU."""

    b: torch.Tensor
    k: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    positive: torch.Tensor
    size: int

    def __len__(self) -> int:
        return len(self.b)


@torch.no_grad()
def sample_patches(conf: torch.Tensor, size: int = 50, stride: int = 20, n: int = 10,
                   uniform: bool = False, generator: torch.Generator | None = None) -> Samples:
    """Draw ``n`` patches per (image, channel) from confidence maps ``conf`` [B, K, H, W]."""
    conf = conf.detach().float().cpu()
    B, K, H, W = conf.shape
    if H < size or W < size:
        raise ValueError(f"crop {H}x{W} is smaller than the patch size {size}")
    A = window_means(conf, size, stride)  # [B, K, h, w]
    h, w = A.shape[-2:]
    A = A.reshape(B * K, h * w)
    if uniform:
        weights = torch.ones_like(A)
    else:
        Bk = window_means(binary_entropy(conf), size, stride).reshape(B * K, h * w)
        weights = torch.clamp(1 - Bk, min=0.001)
    idx = torch.multinomial(weights, n, replacement=True, generator=generator)  # [B*K, n]
    a = torch.gather(A, 1, idx).clamp(0, 1)
    positive = torch.bernoulli(a, generator=generator).bool()
    bk = torch.arange(B * K).repeat_interleave(n)
    idx = idx.reshape(-1)
    return Samples(
        b=bk // K, k=bk % K, y=(idx // w) * stride, x=(idx % w) * stride,
        positive=positive.reshape(-1), size=size,
    )


def cut_patches(images: torch.Tensor, conf: torch.Tensor, s: Samples) -> torch.Tensor:
    """Patches of the attended image ``images * conf_k``: [N, C, P, P] (keeps the gradient of
    ``conf``). ``images`` [B, C, H, W], ``conf`` [B, K, H, W]."""
    P = s.size
    dev = images.device
    ar = torch.arange(P, device=dev)
    ys = (s.y.to(dev)[:, None] + ar)[:, :, None]  # [N, P, 1]
    xs = (s.x.to(dev)[:, None] + ar)[:, None, :]  # [N, 1, P]
    b = s.b.to(dev)[:, None, None]
    k = s.k.to(dev)[:, None, None]
    c = conf[b, k, ys, xs]  # [N, P, P]
    img = images.permute(0, 2, 3, 1)[b, ys, xs]  # [N, P, P, C]
    return (img * c[..., None]).permute(0, 3, 1, 2)
