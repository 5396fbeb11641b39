"""Intra- and inter-channel contrastive losses (paper eq. 7-9).

For channel k with positive patches P_k and negatives N_k (pooled over the batch):

    L_intra = - sum_k 1/|P_k|^2 sum_{r, p in P_k} log[ exp s(r,p) / sum_{n in N_k} exp s(r,n) ]
    L_inter = - sum_k 1/|P_k|^2 sum_{r, p in P_k} log[ exp s(r,p) / sum_{i!=k} sum_{q in P_i} exp s(r,q) ]

Eq. 8 of the paper omits the log; the authors' code takes it, as we do. Channels without
positives (or without negatives, for the intra term) contribute nothing this step.
"""

from __future__ import annotations

import torch

from .similarity import FEATURISED, SIMILARITIES


def contrastive_loss(patches: torch.Tensor, k: torch.Tensor, positive: torch.Tensor, n_channels: int,
                     similarity: str = "mse", featuriser=None, inter: bool = True,
                     inter_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """patches [N, C, P, P] (attended), k [N] channel, positive [N] bool -> (loss, parts)."""
    sim = SIMILARITIES[similarity]
    if similarity in FEATURISED:
        if featuriser is None:
            raise ValueError(f"similarity {similarity!r} needs a featuriser")
        z = featuriser(patches)
    else:
        z = patches.flatten(1)
    k = k.to(z.device)
    positive = positive.to(z.device)
    intra = z.new_zeros(())
    inter_l = z.new_zeros(())
    pos = [z[(k == c) & positive] for c in range(n_channels)]
    neg = [z[(k == c) & ~positive] for c in range(n_channels)]
    for c in range(n_channels):
        P, N = pos[c], neg[c]
        if len(P) == 0:
            continue
        s_pp = sim(P, P)  # [p, p]
        if len(N):
            lse = torch.logsumexp(sim(P, N), dim=1, keepdim=True)  # [p, 1]
            intra = intra - (s_pp - lse).mean()
        if inter:
            others = [pos[i] for i in range(n_channels) if i != c and len(pos[i])]
            if others:
                lse_o = torch.logsumexp(sim(P, torch.cat(others)), dim=1, keepdim=True)
                inter_l = inter_l - (s_pp - lse_o).mean()
    loss = intra + inter_weight * inter_l
    return loss, {"intra": float(intra.detach()), "inter": float(inter_l.detach())}
