"""``histoai info`` / ``histoai detect``: outputs and exit codes per the CLI contract."""

import json
import subprocess
import sys

import pytest

from napari_histoai.cli import main
from napari_histoai.io.points import read_points_csv


def test_info_prints_levels_and_mpp(sample_path, capsys):
    assert main(["info", str(sample_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp"] == pytest.approx(0.499) and len(info["levels"]) == 3


def test_detect_classical_csv_and_geojson(sample_path, tmp_path):
    out = tmp_path / "p.csv"
    assert main(["detect", str(sample_path), "--out", str(out), "--model", "classical"]) == 0
    t = read_points_csv(out)
    assert len(t) > 300
    assert out.read_text().splitlines()[0] == "y,x,class,score,y_um,x_um,mpp"
    assert (t.yx >= 0).all() and (t.yx < 1024).all()
    gj = tmp_path / "p.geojson"
    assert main(["detect", str(sample_path), "--out", str(gj), "--model", "classical", "--region", "0,0,512,512"]) == 0
    feats = json.loads(gj.read_text())["features"]
    xy = [f["geometry"]["coordinates"] for f in feats]
    assert 50 < len(feats) < len(t) and max(max(c) for c in xy) < 512


@pytest.mark.parametrize("args,match", [
    (["detect", "nope.svs", "--out", "x.csv"], "no such file"),
    (["detect", "{sample}", "--out", "x.txt"], "must end with"),
    (["detect", "{sample}", "--out", "x.csv", "--region", "1,2,3"], "4 finite numbers"),
    (["detect", "{sample}", "--out", "x.csv", "--region", "5000,5000,6000,6000", "--model", "classical"], "outside the image"),
    (["detect", "{sample}", "--out", "x.csv", "--model", "no-such-model"], "no model named"),
    (["detect", "{sample}", "--out", "x.csv", "--model", "classical", "--fast"], "fast mode is for AC-Former"),
    (["detect", "{sample}", "--out", "x.csv", "--model", "classical", "--tta"], "test-time flips are for AC-Former"),
])
def test_bad_input_exits_2_with_one_line(sample_path, tmp_path, capsys, args, match, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{sample}", str(sample_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([ln for ln in err if "error" in ln]) == 1 and match in err[-1]


def test_console_script_runs(sample_path):
    r = subprocess.run([sys.executable, "-m", "napari_histoai.cli", "info", str(sample_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "0.4990 µm/px" in r.stdout


def test_convert_builds_a_pyramid_that_keeps_pixel_size(slides_dir, tmp_path):
    from napari_histoai.io import open_image

    out = tmp_path / "os1.ome.tif"
    assert main(["convert", str(slides_dir / "OS-1-detail.ome.tif"), "--out", str(out)]) == 0
    img = open_image(out)
    assert len(img.levels) == 2 and img.mpp == pytest.approx(0.2271, abs=1e-4) and img.magnification == 40


def test_mpp_is_taken_stated_and_written(data_dir, tmp_path, capsys):
    """A PNG carries no pixel size: without --mpp the model's is assumed and stderr says so;
    with --mpp the detector works at the right scale; the outputs record the mpp used."""
    from PIL import Image

    png = tmp_path / "he40x.png"
    src = data_dir / "monuseg" / "train" / "images" / "TCGA-21-5784-01Z-00-DX1.png"
    Image.open(src).convert("RGB").crop((0, 0, 400, 400)).save(png)
    assert main(["detect", str(png), "--out", str(tmp_path / "a.csv"), "--model", "classical"]) == 0
    err = capsys.readouterr().err
    assert "0.5 µm/px (assumed" in err and "note: he40x.png has no pixel size" in err
    gj = tmp_path / "b.geojson"
    assert main(["detect", str(png), "--out", str(gj), "--model", "classical", "--mpp", "0.25"]) == 0
    assert "0.25 µm/px (given)" in capsys.readouterr().err
    props = json.loads(gj.read_text())["properties"]
    assert props["mpp"] == 0.25 and props["mpp_source"] == "given" and props["model"] == "classical"
    a = read_points_csv(tmp_path / "a.csv")
    assert main(["detect", str(png), "--out", str(tmp_path / "c.csv"), "--model", "classical", "--mpp", "0.25"]) == 0
    capsys.readouterr()
    assert (tmp_path / "c.csv").read_text().splitlines()[1].endswith(",0.25")
    assert len(read_points_csv(tmp_path / "c.csv")) != len(a)  # a different scale, other nuclei


@pytest.mark.parametrize("bad", ["-1", "0", "nan", "abc"])
def test_bad_mpp_is_refused_before_any_work(sample_path, tmp_path, capsys, bad):
    assert main(["detect", str(sample_path), "--out", str(tmp_path / "x.csv"), f"--mpp={bad}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mpp" in err[0]  # one line, no usage block
    assert not (tmp_path / "x.csv").exists()


def test_output_that_is_the_input_is_refused(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    img = tmp_path / "he.tif"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(img)
    before = img.read_bytes()
    assert main(["segment", str(img), "--out", str(img)]) == 2
    assert "is the input file" in capsys.readouterr().err and img.read_bytes() == before
