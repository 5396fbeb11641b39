"""CyC-PDAM pieces: inpainting, gradient reversal, task re-weighting, discriminators, one
optimisation of each stage, save/load and resume (methods/adaptation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_histoai.errors import JobError
from napari_histoai.methods.adaptation import (
    AdaptedSegmenter,
    check_source,
    check_target,
    load_adapted_model,
    preset,
    save_adapted_model,
)
from napari_histoai.methods.adaptation.discriminators import (
    ImageDiscriminator,
    InstanceDiscriminator,
    SemanticDiscriminator,
)
from napari_histoai.methods.adaptation.grl import alpha_schedule, grad_reverse
from napari_histoai.methods.adaptation.inpaint import auxiliary_mask, inpaint_nuclei
from napari_histoai.methods.adaptation.reweight import task_weight

TINY = dict(steps=3, gan_steps=3, crop=64, gan_crop=32, warmup=1)


def _he_like(size=96, nuclei=((30, 30), (60, 65))):
    """Pink background with purple discs (H&E-like), and an instance mask of the first disc only."""
    yy, xx = np.mgrid[:size, :size]
    rgb = np.empty((size, size, 3), np.uint8)
    rgb[:] = (235, 190, 215)
    mask = np.zeros((size, size), np.int32)
    for i, (cy, cx) in enumerate(nuclei):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 8 ** 2
        rgb[disc] = (90, 50, 140)
        if i == 0:
            mask[disc] = 1
    return rgb, mask


def test_inpainting_removes_unlabelled_blob_and_keeps_labelled_nucleus():
    rgb, mask = _he_like()
    aux = auxiliary_mask(rgb, mask)
    assert aux[60, 65] and not aux[30, 30]
    out = inpaint_nuclei(rgb, mask)
    # the unlabelled blob turns into background colour, the labelled nucleus is untouched
    assert np.abs(out[60, 65].astype(int) - (235, 190, 215)).max() < 30
    assert np.array_equal(out[mask > 0], rgb[mask > 0])


def test_gradient_reversal_negates_with_scheduled_alpha():
    assert alpha_schedule(0.0) == 0.0
    assert alpha_schedule(0.5) == pytest.approx(2 / (1 + np.exp(-5)) - 1)
    assert alpha_schedule(1.0) == pytest.approx(0.99991, abs=1e-4)
    x = torch.ones(3, requires_grad=True)
    a = alpha_schedule(0.3)
    (grad_reverse(x, a) * 2).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), -2 * a))


def test_task_weight_follows_eq3_and_clamps():
    assert float(task_weight(torch.tensor([0.5]))) == pytest.approx(1.0)
    assert float(task_weight(torch.tensor([0.2]), beta=2.0)) == pytest.approx(2.0)      # 4 clamped to beta
    assert float(task_weight(torch.tensor([0.99]), floor=0.0)) == pytest.approx(0.0101, abs=1e-3)
    assert float(task_weight(torch.tensor([0.99]), floor=0.5)) == pytest.approx(0.5)
    p = torch.tensor([0.4], requires_grad=True)
    assert not task_weight(p).requires_grad


def test_discriminator_output_shapes():
    feats = {k: torch.randn(2, 16, s, s) for k, s in (("0", 64), ("1", 32), ("2", 16), ("pool", 8))}
    d = ImageDiscriminator(16, 8)
    assert d(d.pool(feats)).shape == (2, 1, 8, 8)
    assert SemanticDiscriminator(2, 8)(torch.rand(2, 2, 256, 256)).shape == (2, 1, 16, 16)
    assert InstanceDiscriminator(32)(torch.randn(5, 32)).shape == (5, 1)


def test_cyclegan_step_reduces_its_loss():
    from napari_histoai.methods.adaptation.cyclegan import CycleGAN, _Pool

    torch.manual_seed(0)
    gan = CycleGAN(8, 1)
    opt_g, opt_d = gan.optimisers(2e-3)
    rng = np.random.default_rng(0)
    pools = (_Pool(2, rng), _Pool(2, rng))
    s, t = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    first = gan.step(s, t, opt_g, opt_d, pools)
    for _ in range(15):
        last = gan.step(s, t, opt_g, opt_d, pools)
    assert last["cycle"] < first["cycle"]


def test_pdam_step_reduces_task_loss_with_every_component_on():
    from napari_histoai.methods.adaptation.data import instance_targets
    from napari_histoai.methods.adaptation.network import build, normalise
    from napari_histoai.methods.adaptation.objective import step_losses

    torch.manual_seed(0)
    cfg = preset("compact", **TINY, lr=5e-3)
    net = build(cfg.arch)
    net.train()
    rgb, mask = _he_like(64, ((20, 20), (44, 40)))
    mask[(np.mgrid[:64, :64][0] - 44) ** 2 + (np.mgrid[:64, :64][1] - 40) ** 2 <= 64] = 2
    target = instance_targets(mask)
    fg = torch.from_numpy((mask > 0).astype(np.int64))[None]
    x_s = normalise(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    x_t = normalise(torch.from_numpy(_he_like(64)[0]).permute(2, 0, 1)[None])
    opt = torch.optim.SGD(net.parameters(), lr=5e-3, momentum=0.9)
    task = []
    for _ in range(12):
        total, parts = step_losses(net, x_s, target, fg, x_t, cfg, alpha=0.5)
        assert {"rpn", "det", "mask", "sem", "img_da", "sem_da", "ins_da", "w_img", "w_sem", "w_ins"} <= set(parts)
        opt.zero_grad()
        total.backward()
        opt.step()
        task.append(parts["rpn"] + parts["det"] + parts["mask"] + parts["sem"])
    assert np.mean(task[-3:]) < np.mean(task[:3])


def test_save_load_round_trip_gives_the_same_labels(tmp_path):
    from napari_histoai.methods.adaptation.network import build

    torch.manual_seed(1)
    cfg = preset("compact", **TINY)
    net = build(cfg.arch).eval()
    folder = save_adapted_model(net, cfg, tmp_path / "m", training={"test": True})
    again = load_adapted_model(folder)
    tile = _he_like(128)[0]
    a = AdaptedSegmenter(net, cfg).segment_tiles([tile])[0]
    b = again.segment_tiles([tile])[0]
    assert np.array_equal(a, b)
    assert again.mpp == cfg.mpp
    with pytest.raises(JobError, match="not a 'cycpdam-segmenter' model"):
        load_adapted_model("acformer-crc")


def test_training_resumes_from_checkpoint(tmp_path):
    from napari_histoai.bundled import fluorescence_source
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.adaptation import read_source_folder, train_adapt_job
    from napari_histoai.methods.adaptation import train as train_mod

    src = read_source_folder(*fluorescence_source())[:3]
    tgt = [check_target(_he_like(128)[0], "t.png", 0.5)]
    cfg = preset("compact", **{**TINY, "steps": 4, "gan_steps": 2})
    old = train_mod.CHECKPOINT_EVERY
    train_mod.CHECKPOINT_EVERY = 2
    try:
        job = train_adapt_job(src, tgt, cfg, device="cpu", checkpoint_dir=tmp_path)
        seen = []
        for p in job:          # stop after Mask R-CNN step 2 (a checkpoint), as a killed run would
            if p.info.get("stage") == "maskrcnn":
                seen.append(p.done)
                if p.done == 2:
                    job.close()
                    break
        resumed = []
        res = run_job(train_adapt_job(src, tgt, cfg, device="cpu", checkpoint_dir=tmp_path),
                      lambda p: resumed.append((p.info.get("stage"), p.done)))
    finally:
        train_mod.CHECKPOINT_EVERY = old
    assert ("cyclegan", 1) not in resumed          # the finished CycleGAN was reused
    assert [d for s, d in resumed if s == "maskrcnn"] == [3, 4]
    assert res.preview["inpainted"][0].dtype == np.uint8
    assert ("calibrate", 1) in resumed and any("score threshold" in n for n in res.notes)


@pytest.mark.parametrize("image, mask, match", [
    (np.zeros((8, 8), np.uint8) + np.eye(8, dtype=np.uint8), None, "has no mask"),
    (np.eye(8, dtype=np.uint8), np.zeros((8, 9), np.int32), "same size"),
    (np.eye(8, dtype=np.uint8), np.eye(8, dtype=np.float32), "integer ids"),
    (np.eye(8, dtype=np.uint8), -np.eye(8, dtype=np.int32), "negative"),
    (np.eye(8, dtype=np.uint8), np.pad(np.ones((2, 2), np.int32), 3)
     + np.pad(np.ones((1, 1), np.int32), ((0, 7), (0, 7))), "binary"),
    (np.stack([np.eye(8, dtype=np.uint8) * 200, np.zeros((8, 8), np.uint8), np.eye(8, dtype=np.uint8)], -1),
     np.eye(8, dtype=np.int32), "colour RGB"),
])
def test_bad_source_pairs_get_one_line(image, mask, match):
    with pytest.raises(JobError, match=match) as e:
        check_source(image, mask, "a.png")
    assert "\n" not in str(e.value)


def test_source_normalised_and_grey_rgb_accepted():
    img = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    s = check_source(np.stack([img] * 3, -1), np.pad(np.ones((3, 3), np.uint16), ((2, 3), (2, 3))), "a.tif")
    assert s.image.dtype == np.uint8 and s.image.max() == 255 and s.mask.dtype == np.int32


def test_target_must_be_he():
    with pytest.raises(JobError, match="does not look like H&E"):
        check_target(np.full((128, 128, 3), 30, np.uint8), "dark.png")
    with pytest.raises(JobError, match="8-bit RGB"):
        check_target(np.zeros((128, 128, 3), np.float32), "f.tif")
    assert check_target(_he_like(128)[0], "ok.png").rgb.shape == (128, 128, 3)
    assert check_target(np.full((128, 128, 3), 245, np.uint8), "blank.png")   # an empty tile is harmless


def test_zoom_and_stain_augmentation_keep_masks_on_their_nuclei():
    from napari_histoai.methods.adaptation.data import rescale_crop, stain_jitter

    rgb, mask = _he_like(96)
    rng = np.random.default_rng(0)
    for f in (0.7, 1.4):
        img, m = rescale_crop(rgb, mask, f)
        assert img.shape == rgb.shape and m.shape == mask.shape and m.max() == 1
        assert img[m > 0].mean(0)[1] < 80            # still the purple nucleus under the mask
        assert (m > 0).sum() == pytest.approx((mask > 0).sum() * f * f, rel=0.25)
    j = stain_jitter(rgb, 0.3, rng)
    assert j.shape == rgb.shape and j.dtype == np.uint8
    assert j[mask > 0].mean() < j[mask == 0].mean()    # nuclei stay darker than the background


def _sample_tile(size=512):
    import tifffile

    from napari_histoai.bundled import sample_path

    return np.ascontiguousarray(tifffile.imread(sample_path())[:size, :size, :3])


def test_proposal_budget_does_not_cap_nuclei_on_a_dense_tile():
    """A 512 px tile of tissue holds more nuclei than a small RPN budget lets through."""
    from napari_histoai.methods.adaptation.network import set_test_proposals

    seg = load_adapted_model()
    tile = _sample_tile()
    full = int(seg.segment_tiles([tile])[0].max())
    set_test_proposals(seg.detector, 100, 60)
    capped = int(seg.segment_tiles([tile])[0].max())
    assert capped <= 60 < full


def test_calibrated_threshold_matches_the_hematoxylin_area():
    from napari_histoai.methods.adaptation.calibrate import GRID, calibrate_threshold, otsu_fraction

    seg = load_adapted_model()
    tile = _sample_tile()
    thr, info = calibrate_threshold(seg.detector, [tile], tile=512)
    fr = {float(k): v for k, v in info["fractions"].items()}
    assert thr in GRID
    assert info["otsu_fraction"] == pytest.approx(otsu_fraction(tile))
    assert all(fr[a] >= fr[b] for a, b in zip(GRID, GRID[1:]))      # fewer nuclei at a higher threshold
    assert abs(fr[thr] - info["otsu_fraction"]) == min(abs(v - info["otsu_fraction"]) for v in fr.values())
