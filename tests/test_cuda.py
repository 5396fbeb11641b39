"""Every model on a CUDA GPU: the same commands a user runs, with ``--device cuda``.

Skipped where torch sees no CUDA device (CI). Run on a GPU machine with
``python -m pytest tests/test_cuda.py``. Where a bundled model predicts, the GPU result is
compared with the CPU result of the same command: a user moving to a GPU must get the same
nuclei, not merely some output.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from napari_histoai.cli import main

from .conftest import crc_image
from .test_adapt_cli import TINY, he, he_crops, targets  # noqa: F401  (fixtures)
from .test_heatmap_method import small_slides  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _points(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r["y"]), float(r["x"])] for r in rows]).reshape(-1, 2), [r["class"] for r in rows]


def _read_labels(path):
    import tifffile

    return tifffile.imread(str(path))


@pytest.mark.parametrize("extra", [[], ["--tta"]], ids=["plain", "tta"])
def test_detect_bundled_model_gives_the_same_nuclei_on_gpu_and_cpu(sample_path, tmp_path, capsys, extra):
    region = ["--region", "0,0,768,768", *extra]
    for dev in ("cpu", "cuda"):
        assert main(["detect", str(sample_path), "--out", str(tmp_path / f"{dev}.csv"), *region,
                     "--device", dev]) == 0, capsys.readouterr().err
    (pc, cc), (pg, cg) = _points(tmp_path / "cpu.csv"), _points(tmp_path / "cuda.csv")
    assert len(pc) > 50
    assert abs(len(pg) - len(pc)) <= max(2, 0.02 * len(pc))
    from scipy.spatial import cKDTree

    d, j = cKDTree(pg).query(pc)
    close = d <= 1.0
    assert close.mean() >= 0.97
    assert np.mean([cc[i] == cg[j[i]] for i in np.flatnonzero(close)]) >= 0.97


def test_acformer_with_dense_head_trains_and_predicts_on_gpu(data_dir, tmp_path):
    """A few training steps of the tiny AC-Former with its dense head on CUDA, then both
    inference paths (lone windows, one backbone pass per tile) give the same points."""
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.methods.detection.configs import get_config
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.predict import ACFormerDetector
    from napari_histoai.methods.detection.train import train_job
    from napari_histoai.models import load_checkpoint
    from napari_histoai.methods.detection.model import build_model

    crc = data_dir / "crchisto" / "train"
    cfg = get_config("tiny", dense_head=True, steps=6, dense_mix=0.5)
    items = load_folder(crc / "images", crc / "points", cfg.classes, 0.5, cfg.mpp)[:3]
    infos = []
    run_job(train_job(cfg, items, tmp_path / "m", device="cuda", eval_every=1000), lambda p: infos.append(p.info))
    assert len(infos) == 6 and all(np.isfinite(i["dense"]) for i in infos)
    state, c = load_checkpoint(tmp_path / "m")
    assert c["training"]["device"] == "cuda"
    net = build_model(cfg)
    net.load_state_dict(state)
    det = ACFormerDetector(net, cfg, device="cuda")
    det.threshold = 0.0
    img = crc_image(data_dir, "img1")[:256, :256]
    det.windowed = False
    lone = det.predict_tiles([img])[0]
    det.windowed = True
    shared = det.predict_tiles([img])[0]
    assert len(lone[0]) > 0
    assert abs(len(lone[0]) - len(shared[0])) <= max(2, 0.05 * len(lone[0]))


def test_segment_default_and_paper_method_on_gpu(sample_path, tmp_path, capsys):
    region = ["--region", "256,256,640,640"]
    out = tmp_path / "self.tif"
    assert main(["segment", str(sample_path), "--out", str(out), *region, "--steps", "30",
                 "--device", "cuda"]) == 0, capsys.readouterr().err
    lab = _read_labels(out)
    assert lab.shape == (384, 384) and len(np.unique(lab)) > 20
    out2 = tmp_path / "paper.tif"
    assert main(["segment", str(sample_path), "--out", str(out2), *region, "--method", "contrastive",
                 "--steps", "5", "--restarts", "1", "--device", "cuda"]) == 0, capsys.readouterr().err
    assert len(np.unique(_read_labels(out2))) > 5


def test_bundled_adapted_segmenter_gives_the_same_masks_on_gpu_and_cpu(he_crops, tmp_path, capsys):  # noqa: F811
    labs = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / f"{dev}.tif"
        assert main(["instances", str(he_crops / "crop0.ome.tif"), "--out", str(out), "--device", dev]) == 0, \
            capsys.readouterr().err
        labs[dev] = _read_labels(out)
    a, b = labs["cpu"] > 0, labs["cuda"] > 0
    assert a.sum() > 500
    assert (a & b).sum() / (a | b).sum() > 0.97
    assert abs(len(np.unique(labs["cpu"])) - len(np.unique(labs["cuda"]))) <= 2


def test_train_adapt_on_gpu_gives_a_model_that_segments(targets, he_crops, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "adapted"
    assert main(["train-adapt", "--target-images", str(targets), "--out", str(out), *TINY,
                 "--device", "cuda"]) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["kind"]
    assert main(["instances", str(he_crops / "crop1.ome.tif"), "--model", str(out),
                 "--out", str(tmp_path / "l.tif"), "--device", "cuda"]) == 0


def test_heatmap_trains_and_maps_on_gpu(small_slides, tmp_path, capsys):  # noqa: F811
    model = tmp_path / "hm"
    assert main(["train-heatmap", "--slides", str(small_slides / "slides"), "--labels",
                 str(small_slides / "labels.csv"), "--annotations", str(small_slides / "ann"), "--out", str(model),
                 "--rounds", "1", "--steps", "5", "--init-steps", "10", "--device", "cuda"]) == 0, \
        capsys.readouterr().err
    capsys.readouterr()
    assert main(["heatmap", str(small_slides / "slides" / "s0.ome.tif"), "--model", str(model),
                 "--out", str(tmp_path / "h.ome.tif"), "--device", "cuda"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= s["score"] <= 1


def test_densemap_peer_trains_and_detects_on_gpu(data_dir):
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.densemap import DenseMapConfig, DenseMapDetector, train_densemap_job

    crc = data_dir / "crchisto" / "train"
    cfg = DenseMapConfig(widths=(8, 16, 32, 64), steps=30, batch=4, crop=96, lr=3e-3)
    items = load_folder(crc / "images", crc / "points", cfg.classes)[:3]
    job = train_densemap_job(items, cfg, log_every=10, device="cuda")
    try:
        while True:
            next(job)
    except StopIteration as stop:
        net = stop.value
    assert next(net.parameters()).is_cuda
    pts, cls, score = DenseMapDetector(net, cfg, device="cuda").predict_tiles([items[0].image])[0]
    assert len(pts) == len(cls) == len(score)
