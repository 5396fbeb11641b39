"""AAT: parameter clamping, quadrant initialisation, point transforms against a direct warp."""

import torch

from napari_histoai.methods.detection.aat import (
    AAT,
    ViewGenerator,
    clamp_theta,
    quadrant_thetas,
    random_affine_thetas,
    transform_points,
    warp_images,
)


def test_clamp_ranges():
    raw = torch.tensor([[5.0, -3.0, 2.0, 3.0, 0.01, -2.0], [0.5, 0.2, 0.1, -0.2, 1.5, 0.3]])
    th = clamp_theta(raw)
    assert th.shape == (2, 2, 3)
    assert torch.allclose(th[0], torch.tensor([[2.0, -1.0, 0.5], [1.0, 0.2, -0.5]]))
    assert torch.allclose(th[1].flatten(), raw[1])


def test_aat_starts_at_quadrant_crops_and_is_differentiable():
    torch.manual_seed(0)
    aat = AAT(m=4, patch=4, embed=16, heads=2, blocks=1, input_size=32)
    img = torch.rand(2, 3, 48, 48)
    th = aat(img)
    assert th.shape == (2, 4, 2, 3)
    assert torch.allclose(th[0].reshape(4, 6), quadrant_thetas(4), atol=1e-6)
    views = warp_images(img.repeat_interleave(4, 0), th.reshape(8, 2, 3), 24)
    views.mean().backward()
    assert aat.head.weight.grad is not None and aat.head.weight.grad.abs().sum() > 0


def _direct(point_yx, theta, size_in, size_out):
    """Brute force: warp an image holding one bright pixel, find where it lands."""
    img = torch.zeros(1, 1, size_in, size_in)
    img[0, 0, point_yx[0], point_yx[1]] = 1.0
    v = warp_images(img, theta[None], size_out)[0, 0]
    if v.max() < 0.3:
        return None
    w = v.clamp(min=0)
    ys, xs = torch.meshgrid(torch.arange(size_out).float(), torch.arange(size_out).float(), indexing="ij")
    return torch.tensor([(w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()])


def test_points_follow_the_warp():
    torch.manual_seed(1)
    thetas = list(quadrant_thetas(4).view(4, 2, 3)) + list(random_affine_thetas(12, scale=(0.6, 0.9)))
    checked = 0
    for th in thetas:
        for yx in [(20, 37), (40, 10), (31, 31), (5, 50)]:
            src = torch.tensor([[(yx[0] + 0.5) / 64, (yx[1] + 0.5) / 64]])
            pts, keep = transform_points(src, th)
            d = _direct(yx, th, 64, 48)
            pix = pts[0] * 48 - 0.5
            inner = bool(((pix > 1) & (pix < 46)).all())
            if keep[0] and inner:
                assert d is not None and torch.allclose(pix, d, atol=0.6), (th, yx, pix, d)
                checked += 1
            if not keep[0]:
                assert d is None or ((d < 1) | (d > 46)).any()
    assert checked >= 10


def test_points_leaving_the_view_are_dropped():
    th = quadrant_thetas(4)[0].view(2, 3)  # top-left quadrant
    pts, keep = transform_points(torch.tensor([[0.25, 0.25], [0.75, 0.75], [0.1, 0.4]]), th)
    assert keep.tolist() == [True, False, True]
    assert torch.allclose(pts[0], torch.tensor([0.5, 0.5]))


def test_view_generators():
    img = torch.rand(2, 3, 64, 64)
    g = torch.Generator().manual_seed(0)
    for kind in ("affine", "crop"):
        v, th = ViewGenerator(kind, 3, 32)(img, g)
        assert v.shape == (6, 3, 32, 32) and th.shape == (6, 2, 3)
    v, th = ViewGenerator("none", 4, 64)(img, g)
    assert v.shape == img.shape and torch.equal(v, img)
