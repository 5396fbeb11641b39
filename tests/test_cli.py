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
    assert out.read_text().splitlines()[0] == "y,x,class,score,y_um,x_um"
    assert (t.yx >= 0).all() and (t.yx < 1024).all()
    gj = tmp_path / "p.geojson"
    assert main(["detect", str(sample_path), "--out", str(gj), "--model", "classical", "--region", "0,0,512,512"]) == 0
    feats = json.loads(gj.read_text())["features"]
    xy = [f["geometry"]["coordinates"] for f in feats]
    assert 50 < len(feats) < len(t) and max(max(c) for c in xy) < 512


@pytest.mark.parametrize("args,match", [
    (["detect", "nope.svs", "--out", "x.csv"], "no such file"),
    (["detect", "{sample}", "--out", "x.txt"], "must end with"),
    (["detect", "{sample}", "--out", "x.csv", "--region", "1,2,3"], "4 numbers"),
    (["detect", "{sample}", "--out", "x.csv", "--region", "5000,5000,6000,6000", "--model", "classical"], "outside the image"),
    (["detect", "{sample}", "--out", "x.csv", "--model", "no-such-model"], "no model named"),
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
