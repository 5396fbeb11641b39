"""Contrastive segmenter end to end without a GUI: training job, restarts and selection,
save/load, tiled labels, and ``histoai segment``."""


import numpy as np
import pytest

from napari_histoai.engine.jobs import run_job
from napari_histoai.errors import JobError
from napari_histoai.methods.contrastive import (
    ContrastiveConfig,
    load_model,
    save_model,
    segment_job,
    train_job,
    train_segmenter_job,
)

from .conftest import DATA  # noqa: E402  (honours $HISTOAI_DATA)

NAME = "TCGA-21-5784-01Z-00-DX1"


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (fixture in conftest)."""


def crop(size=192):
    p = DATA / "monuseg" / "train" / "images" / f"{NAME}.png"
    if not p.exists():
        pytest.skip("MoNuSeg data not available")
    from skimage.io import imread

    return imread(p)[200:200 + size, 200:200 + size, :3]


FAST = dict(steps=4, restarts=2, batch_size=2, crop_min=96, crop_max=112, patch_size=32, stride=16,
            eval_every=2, eval_crop=128, n_eval_crops=1, n_channels=3)


def test_train_job_restarts_progress_and_selection():
    img = crop()
    seen = []
    res = run_job(train_job(img, ContrastiveConfig(**FAST)), seen.append)
    assert [p.done for p in seen] == list(range(1, 9)) and seen[-1].total == 8
    assert any("confidence" in p.info for p in seen)
    assert len(res.restart_scores) == 2 and res.score == max(res.restart_scores)
    assert 0 <= res.channel < 3 and res.selected_by == "hematoxylin"
    # with ground truth the selection is by Dice
    gt = np.zeros(img.shape[:2], bool)
    gt[50:90, 50:90] = True
    res2 = run_job(train_job(img, ContrastiveConfig(**{**FAST, "restarts": 1}), masks=[gt]))
    assert res2.selected_by == "dice" and 0 <= res2.score <= 1


def test_same_seed_same_model():
    img = crop(128)
    cfg = ContrastiveConfig(**{**FAST, "restarts": 1, "steps": 2})
    a = run_job(train_job(img, cfg)).net.state_dict()
    b = run_job(train_job(img, cfg)).net.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(JobError):
        run_job(train_job(np.zeros((20, 20, 3), np.uint8), ContrastiveConfig(**FAST)))
    with pytest.raises(JobError):
        ContrastiveConfig(similarity="nope").validate()
    with pytest.raises(JobError):
        run_job(train_segmenter_job(np.zeros((64, 64), np.uint16), ContrastiveConfig(**FAST)))


def test_save_load_and_tiled_labels(tmp_path, monkeypatch):
    img = crop(192)
    res = run_job(train_segmenter_job(img, ContrastiveConfig(**{**FAST, "restarts": 1}), preview=True))
    assert res.preview_maps.shape == (3, 192, 192)
    folder = save_model(res, tmp_path / "seg", mpp=0.25)
    model = load_model(folder)
    assert model.channel == res.channel and model.mpp == pytest.approx(0.25)
    import napari_histoai.methods.contrastive.predict as P

    big = np.tile(img, (2, 2, 1))  # 384 px: several tiles of 256 with the engine's stitching
    one = run_job(segment_job(model, big, threshold=0.5))
    monkeypatch.setattr(P, "TILE", 256)
    tiled = run_job(segment_job(model, big, threshold=0.5, tissue_only=False))
    assert tiled.n_tiles > 1 and one.n_tiles == 1
    one, tiled = one.labels, tiled.labels
    assert one.shape == tiled.shape == (384, 384) and one.dtype == np.uint32
    from napari_histoai.metrics import dice

    assert dice(one > 0, tiled > 0) > 0.97
    region = run_job(segment_job(model, big, region=(10, 20, 110, 140)))
    assert region.labels.shape == (100, 120) and region.origin == (10, 20)
    with pytest.raises(JobError):
        run_job(segment_job(model, big, channel=7))


def test_cli_segment(tmp_path, capsys):
    import tifffile
    from skimage.io import imsave

    from napari_histoai.cli import main

    png = tmp_path / "he.png"
    imsave(png, crop(160), check_contrast=False)
    out = tmp_path / "labels.ome.tif"
    model = tmp_path / "model"
    rc = main(["segment", str(png), "--out", str(out), "--method", "contrastive", "--steps", "3", "--restarts", "1",
               "--patch-size", "32", "--device", "cpu", "--save-model", str(model)])
    assert rc == 0
    lab = tifffile.imread(out)
    assert lab.shape == (160, 160) and lab.dtype in (np.uint16, np.uint32)
    assert (model / "config.json").exists()
    out2 = tmp_path / "again.tif"
    assert main(["segment", str(png), "--out", str(out2), "--model", str(model), "--channel", "0"]) == 0
    assert main(["segment", str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    assert main(["segment", str(png), "--out", str(tmp_path / "x.png")]) == 2
    assert main(["segment", str(png), "--out", str(out), "--model", str(model), "--channel", "9"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err


def test_large_images_train_on_tissue_tiles_only():
    from napari_histoai.methods.contrastive.job import training_images

    he = np.tile(crop(200), (11, 6, 1))  # 2200 x 1200 of real H&E
    img = np.full((2200, 2400, 3), 245, np.uint8)  # glass ...
    img[:, 1200:] = he  # ... with tissue on the right half
    tiles = training_images(img, n_tiles=4, tile=500, seed=0)
    assert len(tiles) == 4 and all(t.shape == (500, 500, 3) for t in tiles)
    assert all(t.mean() < 230 for t in tiles)  # no glass-only tile
    small = training_images(img, region=(0, 1000, 400, 1500))
    assert len(small) == 1 and small[0].shape == (400, 500, 3)
