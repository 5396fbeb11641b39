"""Many files at once on a real dask.distributed LocalCluster: outputs per file, summary.csv,
a bad file as one error row while the others finish, and resuming skips finished files."""

import csv
import shutil

import pytest

from napari_histoai.cli import main

pytestmark = pytest.mark.slow


def _inputs(tmp_path, sample_path, data_dir):
    from PIL import Image

    src = tmp_path / "slides"
    src.mkdir()
    shutil.copy(sample_path, src / "a.ome.tif")
    for name in ("img1", "img2"):
        Image.open(data_dir / "crchisto" / "train" / "images" / f"{name}.png").save(src / f"{name}.png")
    (src / "broken.tif").write_bytes(b"II*\0" + b"\0" * 64)  # a TIFF header and nothing else
    (src / "notes.txt").write_text("not an image: ignored when a folder is expanded")
    return src


def _summary(out):
    with open(out / "summary.csv", newline="") as fh:
        return {r["image"].split("/")[-1]: r for r in csv.DictReader(fh)}


def test_batch_detect_on_a_local_cluster_then_resume(tmp_path, sample_path, data_dir, capsys):
    src = _inputs(tmp_path, sample_path, data_dir)
    out = tmp_path / "results"
    rc = main(["batch", "detect", str(src), "--out", str(out), "--workers", "2", "--model", "classical",
               "--mpp", "0.5"])
    assert rc == 2  # one file failed; the others are done
    rows = _summary(out)
    assert set(rows) == {"a.ome.tif", "img1.png", "img2.png", "broken.tif"}
    assert [rows[k]["status"] for k in ("a.ome.tif", "img1.png", "img2.png")] == ["done"] * 3
    assert rows["broken.tif"]["status"] == "error" and rows["broken.tif"]["error"]
    assert rows["a.ome.tif"]["mpp_source"] == "given" and int(rows["a.ome.tif"]["n"]) > 300 and int(rows["img1.png"]["n"]) > 20
    assert {p.name for p in out.glob("*.csv")} == {"a.csv", "img1.csv", "img2.csv", "summary.csv"}
    err = capsys.readouterr().err
    assert "3 done, 0 skipped (output exists), 1 failed" in err and "Traceback" not in err
    # a second run resumes: finished files are skipped, only the broken one is tried again
    before = (out / "img1.csv").stat().st_mtime_ns
    assert main(["batch", "detect", str(src), "--out", str(out), "--workers", "1", "--model", "classical"]) == 2
    rows = _summary(out)
    assert rows["img1.png"]["status"] == "skipped" and (out / "img1.csv").stat().st_mtime_ns == before
    assert "0 done, 3 skipped (output exists), 1 failed" in capsys.readouterr().err


def test_batch_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    assert main(["batch", "detect", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["batch", "detect", str(afile), "--out", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["batch", "detect", str(afile), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
