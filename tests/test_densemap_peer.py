"""The dense-map peer detector: targets, peaks, a short real training run that learns to put
peaks on nuclei, save/load through the registry, and the train-split selection."""

import numpy as np
import pytest
import torch

from napari_histoai.errors import JobError
from napari_histoai.methods.detection.densemap import (
    DenseMapConfig,
    DenseMapDetector,
    DenseMapUNet,
    centre_targets,
    find_peaks,
    focal_heatmap_loss,
    load_densemap,
    save_densemap,
    train_densemap_job,
)

from .conftest import DATA as _DATA

CRC = _DATA / "crchisto" / "train"
needs_data = pytest.mark.skipif(not (CRC / "images" / "img1.png").is_file(), reason="shared data not available")


def test_centre_targets_peak_at_points_and_classes_around_them():
    pts = np.array([[10.2, 20.0], [40.0, 5.0]], np.float32)
    heat, cls = centre_targets(pts, np.array([2, -1]), 64, sigma=2.0, class_radius=3.0)
    assert heat.shape == (64, 64) and heat.max() <= 1.0
    assert tuple(np.unravel_index(heat[:30].argmax(), heat[:30].shape)) == (10, 20)
    assert heat[40, 5] == pytest.approx(1.0)
    assert cls[10, 20] == 2 and cls[10, 24] == -1          # class only within 3 px
    assert cls[40, 5] == -1                                 # unknown class: a centre, no class target


def test_find_peaks_one_per_blob_above_threshold():
    heat = np.zeros((50, 50), np.float32)
    heat[10, 10], heat[11, 10] = 0.9, 0.8    # one blob, two high pixels: one peak
    heat[30, 30] = 0.5
    heat[40, 5] = 0.1                        # below threshold
    assert find_peaks(heat, 0.3, 2).tolist() == [[10, 10], [30, 30]]


def test_focal_loss_lower_for_the_right_map():
    heat = torch.zeros(1, 1, 16, 16)
    heat[0, 0, 8, 8] = 1.0
    good = torch.full((1, 1, 16, 16), -6.0)
    good[0, 0, 8, 8] = 6.0
    bad = torch.full((1, 1, 16, 16), -6.0)
    bad[0, 0, 2, 2] = 6.0
    assert focal_heatmap_loss(good, heat) < 0.1 * focal_heatmap_loss(bad, heat)


@needs_data
def test_short_training_on_real_tiles_learns_nuclei(tmp_path):
    """200 steps on 5 real CRCHisto tiles: the loss falls and the detections land on nuclei."""
    from napari_histoai.metrics import detection_scores
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.registry import load_detector

    torch.set_num_threads(1)
    cfg = DenseMapConfig(widths=(8, 16, 32, 64), steps=200, batch=4, crop=96, lr=3e-3)
    items = load_folder(CRC / "images", CRC / "points", cfg.classes)
    items = sorted(items, key=lambda it: -len(it.points))[:5]
    losses = []
    job = train_densemap_job(items, cfg, log_every=10)
    try:
        while True:
            losses.append(next(job).info["heat"])
    except StopIteration as stop:
        net = stop.value
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2])
    det = DenseMapDetector(net, cfg)
    pts, cls, score = det.predict_tiles([items[0].image])[0]
    assert detection_scores(pts, items[0].points, 6.0)["f1"] > 0.4
    assert set(np.unique(cls)) <= set(range(4)) and score.min() >= cfg.threshold
    folder = save_densemap(net, cfg, tmp_path / "peer")
    again = load_detector(str(folder), device="cpu")        # the registry knows the kind
    p2, c2, _ = again.predict_tiles([items[0].image])[0]
    assert np.array_equal(p2, pts) and np.array_equal(c2, cls)


def test_wrong_kind_and_mismatched_weights_are_one_line(tmp_path):
    cfg = DenseMapConfig(widths=(8, 16, 32, 64))
    folder = save_densemap(DenseMapUNet(cfg.widths, 4), cfg, tmp_path / "m")
    with pytest.raises(JobError, match="not a 'densemap-detector' model"):
        load_densemap("acformer-crc")
    import json

    c = json.loads((folder / "config.json").read_text())
    c["architecture"]["widths"] = [16, 32, 64, 128]
    (folder / "config.json").write_text(json.dumps(c))
    with pytest.raises(JobError):
        load_densemap(folder)


def test_selection_split_holds_out_every_seventh_tile():
    from types import SimpleNamespace

    from napari_histoai.methods.detection.selection import selection_split

    items = [SimpleNamespace(name=f"img{i:02d}") for i in range(70)]
    train, sel = selection_split(items)
    assert len(sel) == 10 and len(train) == 60
    assert not {it.name for it in sel} & {it.name for it in train}


@needs_data
def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Stopped after step 4 (a checkpoint), the same run resumes at step 5 and ends where an
    uninterrupted run ends."""
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.detection import densemap
    from napari_histoai.methods.detection.data import load_folder

    torch.set_num_threads(1)
    monkeypatch.setattr(densemap, "CHECKPOINT_EVERY", 2)
    cfg = DenseMapConfig(widths=(8, 16, 32, 64), steps=6, batch=2, crop=64)
    items = load_folder(CRC / "images", CRC / "points", cfg.classes)[:3]
    job = train_densemap_job(items, cfg, log_every=1, checkpoint_dir=tmp_path)
    for p in job:
        if p.done == 4:
            job.close()
            break
    seen = []
    resumed = run_job(train_densemap_job(items, cfg, log_every=1, checkpoint_dir=tmp_path), lambda p: seen.append(p.done))
    assert seen == [5, 6]
    straight = run_job(train_densemap_job(items, cfg, log_every=1))
    for (k, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


@needs_data
def test_stain_target_maps_a_restained_image_back_to_the_training_stain():
    """The peer matches an image's stain to its training images' as AC-Former does: the engine's
    prepare hook builds the mapping, and the network then sees tiles whose OD statistics are
    the training ones, not the re-stained ones."""
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.stain import apply_lut, mean_od_stats, od_stats

    cfg = DenseMapConfig(widths=(8, 16, 32, 64))
    items = load_folder(CRC / "images", CRC / "points", cfg.classes)[:6]
    cfg.stain_target = mean_od_stats([it.image for it in items]).tolist()
    det = DenseMapDetector(DenseMapUNet(cfg.widths, 4), cfg)
    od = -np.log((items[0].image.astype(np.float64) + 1) / 256)
    restained = np.clip(256 * np.exp(-od * [1.6, 0.7, 1.2]) - 1, 0, 255).astype(np.uint8)
    tissue = np.ones(restained.shape[:2], bool)
    det.prepare(restained, tissue)
    assert det.stain_lut is not None
    target = np.asarray(cfg.stain_target)
    before = np.abs(od_stats(restained) - target).sum()
    after = np.abs(od_stats(apply_lut(restained, det.stain_lut)) - target).sum()
    assert after < 0.3 * before
    plain = DenseMapDetector(det.net, DenseMapConfig(widths=cfg.widths))
    plain.prepare(restained, tissue)
    assert plain.stain_lut is None                          # models saved without a target: no mapping
