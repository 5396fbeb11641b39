"""scripts/pretrain_backbone.py: dense VICReg on unlabelled H&E pixels. The two views' maps are
aligned position by position, the loss falls on real tiles, the weights load as the detector's
backbone, and an interrupted run resumes where it stopped."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = str(Path(__file__).resolve().parents[1] / "scripts" / "pretrain_backbone.py")


@pytest.fixture(scope="module")
def ssl():
    return runpy.run_path(SCRIPT)  # the module's functions, without running main


def test_turned_maps_come_back_to_the_first_views_grid(ssl):
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    for k in range(4):
        for flip in (False, True):
            t = ssl["turn"](x, k, flip)
            assert torch.equal(ssl["unturn"](t, k, flip), x)
            if (k, flip) != (0, False):
                assert not torch.equal(t, x)  # a real transform: the test can fail
    # identical aligned maps cost no invariance; unaligned ones do
    a = torch.randn(4, 8, 6, 6)
    same = ssl["dense_vicreg"](a, a.clone())
    moved = ssl["dense_vicreg"](a, torch.rot90(a, 1, dims=(2, 3)))
    assert moved - same > 10


def test_pretraining_lowers_its_loss_loads_as_the_backbone_and_resumes(ssl, data_dir, tmp_path, monkeypatch, capsys):
    from napari_histoai.methods.detection.configs import get_config
    from napari_histoai.methods.detection.model import build_model

    out = tmp_path / "r18.safetensors"
    args = ["--out", str(out), "--batch", "4", "--crop", "64", "--threads", "1", "--limit", "2", "--lr", "2e-3"]
    monkeypatch.setattr(sys, "argv", ["pretrain_backbone.py"])
    assert ssl["main"](args + ["--steps", "60"]) == 0
    logs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["step"] for r in logs][-1] == 60
    assert np.mean([r["loss"] for r in logs[-2:]]) < 0.9 * logs[0]["loss"], logs

    from safetensors.torch import load_file

    w = load_file(str(out))
    model = build_model(get_config("compact"), str(out))
    assert torch.equal(model.backbone.body[2][0].conv1.weight, w["layer3.0.conv1.weight"])
    fresh = build_model(get_config("compact"))
    assert not torch.equal(fresh.backbone.body[2][0].conv1.weight, w["layer3.0.conv1.weight"])

    assert ssl["main"](args + ["--steps", "70"]) == 0  # the same run, longer: it resumes
    text = capsys.readouterr().out
    assert "resumed at step 60" in text and '"step": 70' in text and '"step": 10,' not in text
    with pytest.raises(SystemExit):
        ssl["main"](args + ["--crop", "72"])  # not a multiple of the stage-3 stride


def test_a_detector_started_from_pretrained_weights_says_so_on_its_card():
    """The model card of a detector whose backbone started from self-supervised weights names them
    and does not claim a from-scratch backbone; the bundled model's card still says from scratch."""
    import copy

    from napari_histoai.models import read_config, resolve_model

    card = runpy.run_path(str(Path(SCRIPT).with_name("train_default_detector.py")))["model_card"]
    cfg = read_config(resolve_model("acformer-crc"))
    assert "from scratch, no pretrained weights" in card(cfg)
    ssl_cfg = copy.deepcopy(cfg)
    ssl_cfg["training"].pop("base", None)
    ssl_cfg["training"]["backbone_weights"] = "runs/ssl/r18.safetensors"
    text = card(ssl_cfg)
    assert "self-supervised weights, runs/ssl/r18.safetensors" in text
    assert "from scratch" not in text and "the transformer was never trained" in text
