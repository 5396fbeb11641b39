"""Stage 2 of the method: the slide classifier on each slide's top-K patches (theta_2).

Per slide the K patches with the highest maximum stage-1 probability are the classifier's input
(RGB and the probability map, :func:`stage2_inputs`); the slide probability is the mean of the
K patch probabilities; the loss is the BCE of that mean against the slide label. Positive and
negative slides are sampled equally (the paper). The final training loss decides which EM round
is kept (:func:`best_round`: the paper's stopping rule).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["top_k", "stage2_inputs", "train_stage2", "slide_probs", "best_round"]


def top_k(max_probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values of ``max_probs`` [N] (highest first; all when N <= k).
    Ties keep the lower index first (stable)."""
    order = np.argsort(-np.asarray(max_probs, np.float64), kind="stable")
    return order[: max(1, int(k))]


def stage2_inputs(images: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Classifier inputs uint8 [N, 4, P/2, P/2] from patches [N, P, P, 3] uint8 and their
    probability maps [N, P/s, P/s] in [0, 1]: RGB at half resolution (2 x 2 mean) and the map
    resampled to it (nearest), as 0..255."""
    n, p = images.shape[0], images.shape[1]
    h = p // 2
    rgb = images[:, : 2 * h, : 2 * h].reshape(n, h, 2, h, 2, 3).mean((2, 4))
    s = h / probs.shape[1]
    idx = np.minimum((np.arange(h) / s).astype(int), probs.shape[1] - 1)
    prob = probs[:, idx][:, :, idx]
    out = np.concatenate([rgb.transpose(0, 3, 1, 2), prob[:, None] * 255.0], 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _augment(x, rng):
    import torch

    k = int(rng.integers(4))
    x = torch.rot90(x, k, (2, 3))
    return torch.flip(x, (3,)) if rng.random() < 0.5 else x


def slide_probs(net, inputs: Sequence[np.ndarray], device, batch: int = 64) -> np.ndarray:
    """Slide probability per slide: mean patch probability of its inputs [K, 4, h, w] uint8."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for x in inputs:
            t = torch.from_numpy(x).to(device).float() / 255.0
            p = torch.cat([torch.sigmoid(net(t[i:i + batch])) for i in range(0, len(t), batch)])
            out.append(float(p.mean()))
    return np.asarray(out)


def train_stage2(inputs: Sequence[np.ndarray], labels: Sequence[int], *, epochs: int = 15, lr: float = 2e-3,
                 slides_per_batch: int = 8, device="cpu", seed: int = 0, members: int = 1, cancel=None):
    """Train theta_2 from scratch on per-slide inputs [K, 4, h, w] uint8 with slide ``labels``
    (0/1): ``members`` classifiers with seeds seed, seed + 1000, ... averaged
    (:class:`~.network.ClassifierEnsemble`). Returns (net, final loss = mean BCE of the averaged
    slide probabilities over all slides, eval mode)."""
    from .network import ClassifierEnsemble

    net = ClassifierEnsemble(members).to(device)
    for k, m in enumerate(net.members):
        _fit_one(m, inputs, labels, epochs, lr, slides_per_batch, device, seed + 1000 * k, cancel)
    y = np.asarray(labels, int)
    p = np.clip(slide_probs(net, inputs, device), 1e-6, 1 - 1e-6)
    final = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return net, final


def _fit_one(net, inputs, labels, epochs, lr, slides_per_batch, device, seed, cancel) -> None:
    """Train one PatchClassifier in place (balanced slide batches, BCE of the top-K mean)."""
    import torch

    from ...errors import check_cancel

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    for m in net.modules():  # fresh weights from this seed
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    y = np.asarray(labels, int)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    half = max(1, slides_per_batch // 2)
    steps = max(1, int(np.ceil(2 * max(len(pos), len(neg)) / (2 * half))))
    for _ in range(epochs):
        check_cancel(cancel)
        net.train()
        for _ in range(steps):
            pick = np.concatenate([rng.choice(pos, half), rng.choice(neg, half)])
            xs = [torch.from_numpy(inputs[i]).to(device).float() / 255.0 for i in pick]
            sizes = [len(x) for x in xs]
            logits = net(_augment(torch.cat(xs), rng))
            probs = torch.stack([torch.sigmoid(c).mean() for c in torch.split(logits, sizes)]).clamp(1e-6, 1 - 1e-6)
            target = torch.as_tensor(y[pick], dtype=torch.float32, device=device)
            loss = torch.nn.functional.binary_cross_entropy(probs, target)
            opt.zero_grad()
            loss.backward()
            opt.step()


def best_round(losses: Sequence[float]) -> int:
    """The index of the round whose stage-2 loss is lowest (the first on ties)."""
    return int(np.argmin(np.asarray(losses, np.float64)))
