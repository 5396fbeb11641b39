"""FuseStyle: feature-domain style mixing with the least-correlated partner in the batch.

Reference: FuseStyle (papers/fusestyle_*), eq. 1-3. A drop-in ``nn.Module`` for any CNN
trainer: put it after an early and a late backbone stage. In training mode, with probability
``p`` per forward pass, every sample i of a batch x [B, C, H, W] gets the style (channel-wise
instance mean / std, detached) mixed with a partner j::

    lambda_i ~ Beta(alpha, alpha)
    gamma_i  = lambda_i * std(x_i)  + (1 - lambda_i) * std(x_j)
    beta_i   = lambda_i * mean(x_i) + (1 - lambda_i) * mean(x_j)
    out_i    = gamma_i * (x_i - mean(x_i)) / std(x_i) + beta_i

Partner choice (``partner``):
* ``"argmin"`` (the paper): j = argmin_j rho_ij, rho = Z Z^T, Z [B, C*H*W] the flattened
  instance-normalised features (the least correlated sample);
* ``"random"``: a random permutation (MixStyle's random shuffle; the paper's ablation M1);
* ``"euclidean"``: j = argmax_j ||z_i - z_j|| (the paper's ablation M2).

In eval mode (or with B < 2) the module is the identity.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FuseStyle", "PARTNERS", "choose_partner"]

PARTNERS = ("argmin", "random", "euclidean")


def choose_partner(z: torch.Tensor, partner: str = "argmin", generator=None) -> torch.Tensor:
    """Partner index [B] (int64) for each sample of instance-normalised features z [B, ...]."""
    b = z.shape[0]
    if partner == "random":
        return torch.randperm(b, generator=generator, device="cpu").to(z.device)
    flat = z.reshape(b, -1).float()
    if partner == "argmin":
        rho = flat @ flat.t()  # [B, B] dot products (correlation)
        # never pick oneself (self dot product is maximal anyway for normalised rows)
        rho = rho + torch.diag(torch.full((b,), float("inf"), device=z.device))
        return rho.argmin(dim=1)
    if partner == "euclidean":
        d = torch.cdist(flat, flat)  # [B, B]
        return d.argmax(dim=1)
    raise ValueError(f"unknown FuseStyle partner {partner!r}; choose one of {PARTNERS}")


class FuseStyle(nn.Module):
    """Style mixing between least-correlated samples (active only in training, prob. ``p``).

    Args: p (float) probability of mixing per forward pass; alpha (float) Beta shape;
    partner ("argmin" | "random" | "euclidean"); eps (float) added to the variance.
    Input/output: [B, C, H, W] float, same shape.
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.3, partner: str = "argmin", eps: float = 1e-6):
        super().__init__()
        if partner not in PARTNERS:
            raise ValueError(f"unknown FuseStyle partner {partner!r}; choose one of {PARTNERS}")
        self.p, self.alpha, self.partner, self.eps = float(p), float(alpha), partner, float(eps)
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}, partner={self.partner!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] < 2 or self.p <= 0:
            return x
        if self.p < 1 and torch.rand(()) >= self.p:
            return x
        return self.mix(x)

    def mix(self, x: torch.Tensor, lam: torch.Tensor | None = None, perm: torch.Tensor | None = None) -> torch.Tensor:
        """Always mix (no coin flip); ``lam`` [B] and ``perm`` [B] may be given (tests)."""
        b = x.shape[0]
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        xn = (x - mu) / sig
        if perm is None:
            perm = choose_partner(xn.detach(), self.partner)
        if lam is None:
            lam = self._beta.sample((b,)).to(x.device, x.dtype)
        lam = lam.view(b, 1, 1, 1)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return xn * sig_mix + mu_mix
