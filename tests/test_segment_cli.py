"""``histoai segment``: the self-trained U-Net is the default, the paper's contrastive segmenter is
``--method contrastive``, ``--model`` takes a saved segmenter of either kind (its kind decides),
and options of the other method are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_histoai.cli import main

REGION = "384,384,640,640"  # 256 x 256 px of tissue in the bundled sample


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny runs: one torch thread (fixture in conftest)."""


def _err_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "\r" not in ln]


def test_default_method_trains_saves_and_reuses(sample_path, tmp_path, capsys):
    out, model = tmp_path / "labels.ome.tif", tmp_path / "mine"
    assert main(["segment", str(sample_path), "--out", str(out), "--steps", "60", "--region", REGION,
                 "--device", "cpu", "--save-model", str(model)]) == 0
    err = "\n".join(_err_lines(capsys))
    assert "self-trained U-Net, 60 steps" in err and f"model saved to {model}" in err
    lab = tifffile.imread(out)
    assert lab.shape == (256, 256) and lab.dtype in (np.uint16, np.uint32)
    assert 20 < len(np.unique(lab)) - 1 == lab.max()
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["kind"] == "selftrain-segmenter" and cfg["architecture"]["steps"] == 60

    # the saved model is applied without training: the same labels, faster
    out2 = tmp_path / "again.tif"
    assert main(["segment", str(sample_path), "--out", str(out2), "--model", str(model), "--region", REGION,
                 "--device", "cpu"]) == 0  # the same device: bit-identical labels (CPU vs GPU: tests/test_cuda.py)
    err = "\n".join(_err_lines(capsys))
    assert "steps" not in err and "self-trained U-Net mine" in err
    assert np.array_equal(tifffile.imread(out2), lab)
    # its threshold can be changed when it is applied
    out3 = tmp_path / "strict.tif"
    assert main(["segment", str(sample_path), "--out", str(out3), "--model", str(model), "--region", REGION,
                 "--threshold", "0.9"]) == 0
    assert "threshold 0.9" in capsys.readouterr().err
    assert (tifffile.imread(out3) > 0).sum() < (lab > 0).sum()

    # a saved self-trained model cannot run as the contrastive method
    assert main(["segment", str(sample_path), "--out", str(tmp_path / "x.tif"), "--model", str(model),
                 "--method", "contrastive"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "needs method 'selftrain'" in lines[0]


def test_contrastive_method_still_works(sample_path, tmp_path, capsys):
    out = tmp_path / "c.ome.tif"
    assert main(["segment", str(sample_path), "--out", str(out), "--method", "contrastive", "--steps", "3",
                 "--restarts", "1", "--channels", "3", "--patch-size", "32", "--region", REGION,
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "kept restart 1" in err and "nuclei channel" in err
    lab = tifffile.imread(out)
    assert lab.shape == (256, 256)


@pytest.mark.parametrize("args,says", [
    (["--model", "cycpdam-he"], "'cycpdam-segmenter' model, not a nuclei segmenter"),
    (["--restarts", "2"], "--restarts is an option of --method contrastive"),
    (["--channel", "1"], "--channel is an option of --method contrastive"),
    (["--threshold", "auto"], "--threshold auto is for --method contrastive"),
    (["--threshold", "1.5"], "--threshold must be in (0, 1)"),
    (["--method", "stardist"], "--method"),
])
def test_wrong_models_and_options_are_one_line(sample_path, tmp_path, capsys, args, says):
    out = tmp_path / "labels.tif"
    assert main(["segment", str(sample_path), "--out", str(out), *args]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "error" in lines[0] and says in lines[0], lines
    assert not out.exists()
