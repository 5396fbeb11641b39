"""Contrastive segmenter: network sizes, sampler behaviour, similarities, loss, post-processing."""


import numpy as np
import pytest
import torch

from napari_histoai.methods.contrastive.loss import contrastive_loss
from napari_histoai.methods.contrastive.network import (
    ConfidenceNet,
    Featuriser,
    build,
    n_params,
)
from napari_histoai.methods.contrastive.postprocess import (
    mask_from_confidence,
    split_instances,
    suggest_channel,
)
from napari_histoai.methods.contrastive.predict import confidence, to_input
from napari_histoai.methods.contrastive.sampler import (
    binary_entropy,
    cut_patches,
    sample_patches,
)
from napari_histoai.methods.contrastive.similarity import ce, cosine, mse

from .conftest import DATA  # noqa: E402  (honours $HISTOAI_DATA)

MONUSEG = DATA / "monuseg" / "train" / "images" / "TCGA-21-5784-01Z-00-DX1.png"


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (fixture in conftest)."""


def real_crop(size=160, y=300, x=300):
    if not MONUSEG.exists():
        pytest.skip("MoNuSeg data not available")
    from skimage.io import imread

    return imread(MONUSEG)[y:y + size, x:x + size, :3]


def test_parameter_counts_match_the_paper():
    net, feat = build({"n_channels": 4})
    assert n_params(net) == 7372  # "about 7.4k"
    assert n_params(feat) == 3530  # "about 3.4k" (81 -> 32 head on a 9x9 single-channel map)
    assert abs(n_params(net) + n_params(feat) - 10.8e3) < 200
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        c = net(x)
    assert c.shape == (2, 4, 64, 64) and float(c.min()) > 0 and float(c.max()) < 1
    assert Featuriser()(torch.rand(5, 3, 50, 50)).shape == (5, 32)
    assert Featuriser()(torch.rand(5, 3, 30, 30)).shape == (5, 32)


def test_sampler_positives_come_from_confident_windows():
    conf = torch.full((1, 1, 200, 400), 0.02)
    conf[..., :, :200] = 0.98  # left half: confident "object", right half: confident background
    s = sample_patches(conf, size=50, stride=20, n=2000, generator=torch.Generator().manual_seed(0))
    left = (s.x + 50) <= 200
    right = s.x >= 200
    assert s.positive.sum() > 100 and (~s.positive).sum() > 100
    # windows in the confident half are positives, those in the background negatives
    assert s.positive[left].float().mean() > 0.95
    assert s.positive[right].float().mean() < 0.05
    assert left.sum() > 300 and right.sum() > 300


def test_sampler_prefers_low_entropy_windows():
    conf = torch.full((1, 1, 200, 400), 0.5)  # uncertain everywhere (entropy 1 bit) ...
    conf[..., :, :100] = 0.01  # ... except a certain quarter (entropy 0.08 bit)
    g = torch.Generator().manual_seed(1)
    s = sample_patches(conf, size=50, stride=20, n=2000, generator=g)
    in_certain = ((s.x + 50) <= 100).float().mean()
    u = sample_patches(conf, size=50, stride=20, n=2000, uniform=True, generator=g)
    in_certain_u = ((u.x + 50) <= 100).float().mean()
    # 3 of 18 window columns are fully certain (weight 0.92), 2 straddle, 13 are uncertain (0.001)
    assert in_certain > 0.6
    assert (s.x >= 100).float().mean() < 0.02
    assert 0.1 < in_certain_u < 0.25  # uniform sampling follows the area
    assert float(binary_entropy(torch.tensor(0.5))) == pytest.approx(1.0)


def test_patches_are_cut_from_the_attended_image_with_gradient():
    img = torch.rand(2, 3, 60, 60)
    conf = torch.rand(2, 4, 60, 60, requires_grad=True)
    s = sample_patches(conf, size=20, stride=10, n=3)
    p = cut_patches(img, conf, s)
    assert p.shape == (len(s), 3, 20, 20)
    i = 5
    b, k, y, x = int(s.b[i]), int(s.k[i]), int(s.y[i]), int(s.x[i])
    ref = img[b, :, y:y + 20, x:x + 20] * conf[b, k, y:y + 20, x:x + 20]
    assert torch.allclose(p[i], ref)
    p.sum().backward()
    assert conf.grad is not None and conf.grad.abs().sum() > 0


def test_similarities_rank_identical_patches_highest():
    a = torch.rand(4, 30)
    for f in (mse, ce, cosine):
        s = f(a, a)
        assert s.shape == (4, 4)
    assert torch.allclose(torch.diagonal(mse(a, a)), torch.zeros(4), atol=1e-5)
    assert torch.all(torch.diagonal(mse(a, a))[:, None] >= mse(a, a) - 1e-6)
    assert torch.allclose(torch.diagonal(cosine(a, a)), torch.ones(4), atol=1e-5)
    b = torch.rand(3, 30)
    ref = -((a[1] - b[2]) ** 2).mean()
    assert float(mse(a, b)[1, 2]) == pytest.approx(float(ref), abs=1e-5)


@pytest.mark.parametrize("similarity", ["mse", "ce", "cosine"])
def test_loss_falls_on_a_real_crop(similarity):
    torch.manual_seed(0)
    x = to_input(real_crop(128))
    net, feat = build({"n_channels": 3})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        s = sample_patches(net(x), size=32, stride=16, n=12, generator=gen)
    params = list(net.parameters()) + list(feat.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(15):  # fixed patches: the loss must go down if gradients flow correctly
        loss, parts = contrastive_loss(cut_patches(x, net(x), s), s.k, s.positive, 3, similarity, featuriser=feat)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert set(parts) == {"intra", "inter"}


def test_inter_switch_and_missing_positives():
    p = torch.rand(6, 3, 8, 8)
    k = torch.tensor([0, 0, 0, 1, 1, 1])
    pos = torch.tensor([True, True, False, False, False, False])  # channel 1 has no positive
    loss_on, parts = contrastive_loss(p, k, pos, 2, "mse", inter=True)
    loss_off, parts_off = contrastive_loss(p, k, pos, 2, "mse", inter=False)
    assert torch.isfinite(loss_on) and parts_off["inter"] == 0.0
    assert parts["inter"] == 0.0  # no other channel has positives


def discs(shape=(80, 120), centres=((40, 45), (40, 75)), r=17):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return [((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r for cy, cx in centres]


def test_touching_discs_are_split_into_two_instances():
    a, b = discs()
    assert (a & b).any()  # they overlap/touch: one connected component
    labels = split_instances(a | b, min_distance=8)
    ids = [i for i in np.unique(labels) if i]
    assert len(ids) == 2
    for d in (a, b):
        best = max(((labels == i) & d).sum() / ((labels == i) | d).sum() for i in ids)
        assert best > 0.8
    assert split_instances(np.zeros((10, 10), bool)).max() == 0


def test_mask_postprocessing_removes_specks_and_keeps_nuclei():
    a, b = discs()
    conf = np.where(a | b, 0.9, 0.1)
    conf[5, 5] = conf[70, 110] = 0.95  # isolated specks
    m = mask_from_confidence(conf, 0.5)
    assert not m[5, 5] and not m[70, 110]
    assert (m & (a | b)).sum() / (a | b).sum() > 0.95


def test_channel_suggestion_follows_hematoxylin():
    from napari_histoai.methods.contrastive.postprocess import hematoxylin

    rgb = real_crop(120)
    h = hematoxylin(rgb)
    h = (h - h.min()) / (h.max() - h.min())
    rng = np.random.default_rng(0)
    conf = np.stack([rng.random(h.shape), 1 - h, np.clip(h + 0.05 * rng.standard_normal(h.shape), 0, 1)])
    assert suggest_channel(conf, rgb, "auto") == 2


def test_tiled_confidence_equals_one_pass():
    torch.manual_seed(0)
    net = ConfidenceNet(2).eval()
    rgb = np.random.default_rng(0).integers(0, 255, (300, 340, 3), dtype=np.uint8)
    whole = confidence(net, rgb, tile=4096)
    tiled = confidence(net, rgb, tile=256)  # tiles of 256 overlapping by 192: the engine stitches 4 x 3 tiles
    assert whole.shape == (2, 300, 340)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
