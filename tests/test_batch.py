"""Many files at once on a real dask.distributed LocalCluster: outputs and JSON records per file,
summary.csv, a bad file as one error row while the others finish, resuming skips finished files
(by their records) and re-runs them when an option changes; models loaded once per worker; a
scheduler that does not answer is one line, quickly."""

import csv
import json
import os
import socket
import threading
import time

import pytest

from napari_histoai.cli import main


def _inputs(tmp_path, sample_path, data_dir):
    from PIL import Image

    src = tmp_path / "slides"
    src.mkdir()
    (src / "a.ome.tif").write_bytes(sample_path.read_bytes())
    for name in ("img1", "img2"):
        Image.open(data_dir / "crchisto" / "train" / "images" / f"{name}.png").save(src / f"{name}.png")
    (src / "broken.tif").write_bytes(sample_path.read_bytes()[:3000])  # a truncated TIFF
    (src / "notes.txt").write_text("not an image: ignored when a folder is expanded")
    return src


def _summary(out):
    with open(out / "summary.csv", newline="") as fh:
        return {r["image"].split("/")[-1]: r for r in csv.DictReader(fh)}


def _record(out, name):
    return json.loads((out / "records" / f"{name}.json").read_text())


@pytest.mark.slow
def test_batch_detect_on_a_local_cluster_then_resume(tmp_path, sample_path, data_dir, capsys):
    from napari_histoai import __version__

    src = _inputs(tmp_path, sample_path, data_dir)
    out = tmp_path / "results"
    base = ["batch", "detect", str(src), "--out", str(out), "--model", "classical"]
    assert main(base + ["--mpp", "0.5", "--workers", "2"]) == 2  # one file failed; the others are done
    rows = _summary(out)
    assert set(rows) == {"a.ome.tif", "img1.png", "img2.png", "broken.tif"}
    assert [rows[k]["status"] for k in ("a.ome.tif", "img1.png", "img2.png")] == ["done"] * 3
    assert rows["broken.tif"]["status"] == "error" and rows["broken.tif"]["error"]
    assert rows["a.ome.tif"]["mpp_source"] == "given" and int(rows["a.ome.tif"]["n"]) > 300 and int(rows["img1.png"]["n"]) > 20
    assert {p.name for p in out.glob("*.csv")} == {"a.csv", "img1.csv", "img2.csv", "summary.csv"}
    err = capsys.readouterr().err
    assert "3 done, 0 skipped (done before), 1 failed" in err and "Traceback" not in err
    assert f"broken.tif: error: {rows['broken.tif']['error']}" in err  # the bad file's one line
    # a JSON record per file, the failed one too
    rec = _record(out, "img1.csv")
    assert rec["status"] == "done" and rec["n"] == int(rows["img1.png"]["n"]) and rec["seconds"] >= 0
    assert rec["model"] == "classical" and rec["options"] == {"mpp": 0.5} and rec["version"] == __version__
    assert rec["file"].endswith("img1.png") and rec["threads"] == 1
    assert _record(out, "broken.csv")["status"] == "error"
    # models loaded once per worker: 3 files on 2 workers, so one worker reused its detector
    recs = [_record(out, f"{s}.csv") for s in ("a", "img1", "img2")]
    assert sum(r["model_cache"]["reused"] for r in recs) >= 1
    assert sum(r["model_cache"]["loaded"] for r in recs) <= 2

    # resume: the same model and options skip every finished file (no cluster is even started)
    good = [str(src / n) for n in ("a.ome.tif", "img1.png", "img2.png")]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.csv") if p.name != "summary.csv"}
    t = time.perf_counter()
    assert main(["batch", "detect", *good, "--out", str(out), "--model", "classical", "--mpp", "0.5"]) == 0
    assert time.perf_counter() - t < 5
    assert "0 done, 3 skipped (done before), 0 failed" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.csv") if p.name != "summary.csv"} == before
    rows = _summary(out)
    assert rows["img1.png"]["status"] == "skipped" and rows["img1.png"]["n"] == str(rec["n"])  # kept from the record

    # another option re-runs them all, and the failed file is tried again
    assert main(base + ["--mpp", "0.25", "--workers", "1"]) == 2
    assert "3 done, 0 skipped (done before), 1 failed" in capsys.readouterr().err
    assert all((out / n).stat().st_mtime_ns != m for n, m in before.items())
    assert _record(out, "img1.csv")["options"] == {"mpp": 0.25}


def test_a_record_vouches_only_for_its_own_result(tmp_path):
    """What makes a re-run skip a file: a ``done`` record of the same task, model, options and
    input, and the very output file it was written with (size, mtime)."""
    from napari_histoai.batch import _finished, _stat

    img, out = tmp_path / "a.png", tmp_path / "a.csv"
    img.write_bytes(b"image")
    out.write_text("y,x\n")
    key = {"task": "detect", "model": "m", "model_id": "sha256:1", "options": {"mpp": 0.5}, "file_stat": _stat(img)}
    rec = {**key, "status": "done", "out_stat": _stat(out)}
    assert _finished(rec, key, out)
    assert not _finished(None, key, out)
    assert not _finished({**rec, "status": "error"}, key, out)
    assert not _finished(rec, {**key, "model_id": "sha256:2"}, out)  # same name, retrained weights
    assert not _finished(rec, {**key, "options": {"mpp": 0.25}}, out)
    assert not _finished(rec, {**key, "file_stat": [1, 2]}, out)  # the input changed
    out.write_text("y,x\n1,2\n")  # written again by a run that was killed before its record
    assert not _finished(rec, key, out)
    out.unlink()
    assert not _finished(rec, key, out)


def test_batch_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    assert main(["batch", "detect", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["batch", "detect", str(afile), "--out", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["batch", "detect", str(afile), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["batch", "heatmap", str(afile), "--out", str(tmp_path / "o")]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["batch", "segment", str(afile), "--out", str(tmp_path / "o"), "--fast"]) == 2
    assert "--fast is a detect option" in capsys.readouterr().err
    assert main(["batch", "segment", str(afile), "--out", str(tmp_path / "o"), "--tta"]) == 2
    assert "--tta is a detect option" in capsys.readouterr().err
    (tmp_path / "two").mkdir()
    for n in ("s.png", "s.tif"):
        (tmp_path / "two" / n).write_bytes(b"x")
    assert main(["batch", "detect", str(tmp_path / "two"), "--out", str(tmp_path / "o")]) == 2
    assert "would both write s.csv" in capsys.readouterr().err


def test_a_scheduler_that_does_not_answer_is_one_line_quickly(tmp_path, sample_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    assert main(["batch", "detect", str(sample_path), "--out", str(tmp_path / "o"),
                 "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    assert time.perf_counter() - t < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"histoai batch: error: cannot reach the dask scheduler tcp://127.0.0.1:{port}: Connection refused"]
    # something listens there, but it is not a dask scheduler
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed
                return
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
            time.sleep(0.2)
            conn.close()

    th = threading.Thread(target=answer, daemon=True)
    th.start()
    t = time.perf_counter()
    try:
        assert main(["batch", "detect", str(sample_path), "--out", str(tmp_path / "o"),
                     "--scheduler", f"127.0.0.1:{port}"]) == 2
    finally:
        server.close()
    assert time.perf_counter() - t < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot reach the dask scheduler 127.0.0.1:{port}" in err[0]
    assert not (tmp_path / "o" / "records").exists() or not any((tmp_path / "o" / "records").iterdir())


@pytest.mark.slow
def test_batch_heatmap_from_python_on_a_running_scheduler(tmp_path, sample_path, data_dir):
    """``batch_run`` from Python against a scheduler address (a cluster the caller runs, its
    workers offering one file at a time): slide scores in the summary, heatmaps that open,
    torch on the worker's 2 threads, the model loaded once for both files."""
    from napari_histoai import tasks

    if not hasattr(tasks, "heatmap_file"):
        pytest.skip("no heatmap task in this build")
    import tifffile
    from distributed import LocalCluster
    from PIL import Image

    from napari_histoai.batch import batch_run
    from napari_histoai.methods.heatmap import config_from, save_heatmap_model
    from napari_histoai.methods.heatmap.model import HeatmapModel
    from napari_histoai.methods.heatmap.network import ClassifierEnsemble, PatchSegNet
    from napari_histoai.methods.heatmap.train import HeatmapTrainResult

    cfg = config_from("compact", width=8)
    m = HeatmapModel(PatchSegNet(8), ClassifierEnsemble(cfg.stage2_members), cfg)  # untrained: any score in [0, 1] will do
    save_heatmap_model(HeatmapTrainResult(m.seg.state_dict(), m.cls.state_dict(), cfg, 0.5), tmp_path / "hm")
    src = tmp_path / "slides"
    src.mkdir()
    (src / "a.ome.tif").write_bytes(sample_path.read_bytes())
    Image.open(data_dir / "crchisto" / "train" / "images" / "img1.png").save(src / "b.png")
    out = tmp_path / "maps"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      resources={"histoai-file": 1}) as cluster:
        done = []
        rows = batch_run("heatmap", [src], out, options={"model": str(tmp_path / "hm"), "mpp": 0.5, "device": "cpu"},
                         scheduler=cluster.scheduler_address, on_file=lambda row, k, n: done.append((k, n)))
    assert [r["status"] for r in rows] == ["done", "done"] and sorted(done) == [(1, 2), (2, 2)]
    rows = _summary(out)
    for name, stem in (("a.ome.tif", "a"), ("b.png", "b")):
        assert 0 <= float(rows[name]["score"]) <= 1
        with tifffile.TiffFile(out / f"{stem}.ome.tif") as tf:
            assert tf.series[0].levels[0].asarray().size > 0
        rec = _record(out, f"{stem}.ome.tif")
        assert rec["model_id"].startswith("sha256:") and rec["score"] == float(rows[name]["score"])
        assert rec["torch_threads"] == 2 and "top_k" in rec["result"]
    loads = [_record(out, f"{s}.ome.tif")["model_cache"] for s in ("a", "b")]
    assert sorted(c["loaded"] for c in loads) == [0, 1] and sorted(c["reused"] for c in loads) == [0, 1]
    assert os.environ.get("OMP_NUM_THREADS") != "2"  # the client's own environment is left alone
