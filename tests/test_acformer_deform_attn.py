"""Multi-scale deformable attention: shapes, gradients, and sampling at a known location."""

import torch

from napari_histoai.methods.detection.deform_attn import (
    MSDeformAttn,
    ms_deform_attn_core,
)


def test_shapes_and_gradients():
    torch.manual_seed(0)
    shapes = [(8, 8), (4, 4), (2, 2)]
    s = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=3)
    # at initialisation offsets and weights ignore the query (zero weights): perturb them
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.1)
    q = torch.randn(2, 5, 16, requires_grad=True)
    v = torch.randn(2, s, 16, requires_grad=True)
    ref = torch.rand(2, 5, 3, 2)
    out = attn(q, ref, v, shapes)
    assert out.shape == (2, 5, 16)
    out.square().mean().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0


def test_core_samples_pixel_centres_in_yx():
    h, w = 4, 6
    val = torch.arange(h * w, dtype=torch.float32).view(1, h * w, 1, 1)  # value = row * w + col
    y, x = 2, 5
    loc = torch.tensor([(y + 0.5) / h, (x + 0.5) / w]).view(1, 1, 1, 1, 1, 2)
    out = ms_deform_attn_core(val, [(h, w)], loc, torch.ones(1, 1, 1, 1, 1))
    assert torch.allclose(out.flatten(), torch.tensor([float(y * w + x)]))
