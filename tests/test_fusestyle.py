"""FuseStyle: least-correlated partner, mixing formula, identity in eval mode."""

import pytest
import torch

from napari_histoai.methods.fusestyle import FuseStyle, choose_partner


def _batch():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 3, 8, 8, generator=g)
    # sample 1 is (nearly) the negation of sample 0 -> least correlated with 0; 2 close to 0
    return torch.cat([base, -base + 0.01 * torch.randn(1, 3, 8, 8, generator=g),
                      base + 0.1 * torch.randn(1, 3, 8, 8, generator=g)])


def test_argmin_partner_is_least_correlated():
    z = _batch()
    perm = choose_partner(z, "argmin")
    flat = z.reshape(3, -1)
    rho = flat @ flat.T
    for i in range(3):
        others = [j for j in range(3) if j != i]
        assert perm[i] == min(others, key=lambda j: rho[i, j])
    assert perm[0] == 1 and perm[2] == 1 and perm[1] in (0, 2)


def test_random_partner_is_a_permutation():
    perm = choose_partner(torch.randn(6, 2, 4, 4), "random")
    assert sorted(perm.tolist()) == list(range(6))


def test_mix_formula():
    x = torch.randn(2, 3, 5, 5) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1) + torch.tensor([0.0, 2.0]).view(2, 1, 1, 1)
    fs = FuseStyle(p=1.0, eps=0.0)
    lam = torch.tensor([0.25, 1.0])
    out = fs.mix(x, lam=lam, perm=torch.tensor([1, 0]))
    mu, sig = x.mean((2, 3), keepdim=True), x.var((2, 3), keepdim=True).sqrt()
    exp0 = (x[0] - mu[0]) / sig[0] * (0.25 * sig[0] + 0.75 * sig[1]) + (0.25 * mu[0] + 0.75 * mu[1])
    assert torch.allclose(out[0], exp0, atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-5)  # lambda = 1 keeps its own style


def test_identity_in_eval_and_with_p0():
    x = torch.randn(4, 3, 6, 6)
    fs = FuseStyle(p=1.0).eval()
    assert torch.equal(fs(x), x)
    fs0 = FuseStyle(p=0.0).train()
    assert torch.equal(fs0(x), x)
    fs1 = FuseStyle(p=1.0).train()
    assert not torch.allclose(fs1(x), x)
    assert fs1(x).shape == x.shape


def test_gradient_flows_and_stats_detached():
    x = torch.randn(4, 3, 6, 6, requires_grad=True)
    FuseStyle(p=1.0).train()(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_partner():
    with pytest.raises(ValueError):
        FuseStyle(partner="nearest")
