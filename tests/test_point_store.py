"""The whole-slide nuclei store: region queries, durable edits, exports and summaries (no Qt)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_histoai.io.point_export import export_store_csv, export_store_geojson
from napari_histoai.io.point_store import PointStore
from napari_histoai.io.point_summary import density_pyramid, region_summary, slide_summary, summary_csv_text
from napari_histoai.io.points import read_points_csv, read_points_geojson

CLASSES = ["epithelial", "inflammatory", "fibroblast"]


def synthetic(n=20_000, shape=(5000, 7000), seed=0):
    rng = np.random.default_rng(seed)
    yx = rng.uniform(0, 1, (n, 2)) * (np.array(shape) - 1)
    return yx, rng.integers(0, 3, n), rng.uniform(0.5, 1, n).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    yx, cls, sc = synthetic()
    return PointStore.create(tmp_path / "nuclei.points", yx, cls, CLASSES, sc, shape=(5000, 7000), mpp=0.5,
                             bucket=512, bin_px=64), yx.astype(np.float32), cls, sc


def _box(yx, y0, x0, y1, x1):
    return np.flatnonzero((yx[:, 0] >= y0) & (yx[:, 0] < y1) & (yx[:, 1] >= x0) & (yx[:, 1] < x1))


def test_region_query_returns_exactly_the_points_in_the_box(store):
    s, yx, cls, sc = store
    for box in [(0, 0, 5000, 7000), (1000.5, 2000.25, 1800, 3100), (4990, 6990, 6000, 9000), (-50, -50, 3, 700)]:
        q = s.query(*box)
        want = _box(yx.astype(np.float32), *box)
        assert len(q) == len(want)
        got = q.yx[np.lexsort(q.yx.T[::-1])]
        ref = yx[want][np.lexsort(yx[want].T[::-1])]
        np.testing.assert_array_equal(got, ref)
        # ids give back the same points
        np.testing.assert_array_equal(s.get(q.ids).yx, q.yx)
    assert len(s) == len(yx) and s.class_counts().tolist() == np.bincount(cls, minlength=3).tolist()


def test_edits_survive_reopen_and_compaction(store):
    s, yx, cls, sc = store
    q = s.query(100, 100, 600, 600)
    gone, moved, recl = q.ids[:3], q.ids[3], q.ids[4]
    s.delete(gone)
    p = s.get([moved])
    p.yx[:] = [[4000.0, 6000.0]]
    s.put(p)
    s.set_class([recl], 2)
    new = s.add([[10.0, 20.0]], [1])
    s.close()
    r = PointStore(s.path)
    assert r.n_edits == 6 and len(r) == len(yx) - 3 + 1
    assert not np.isin(gone, r.query(0, 0, 5000, 7000).ids).any()
    assert moved in r.query(3999, 5999, 4001, 6001).ids and moved not in r.query(100, 100, 600, 600).ids
    assert r.get([recl]).cls[0] == 2 and r.get([recl]).source[0] == 1
    assert r.get(new).cls[0] == 1
    counts = r.class_counts()
    r.compact()
    assert r.n_edits == 0 and len(r) == len(yx) - 2 and (r.class_counts() == counts).all()
    assert len(PointStore(s.path).query(9, 19, 11, 21)) == 1


def test_an_edit_survives_kill_9(store):
    s, *_ = store
    target = int(s.query(0, 0, 400, 400).ids[0])
    s.close()
    code = textwrap.dedent(f"""
        import sys, time
        from napari_histoai.io.point_store import PointStore
        s = PointStore({str(s.path)!r})
        s.set_class([{target}], 2)
        s.add([[1.5, 2.5]], [0])
        print("edited", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "edited"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    r = PointStore(s.path)
    assert r.get([target]).cls[0] == 2 and len(r.query(1, 2, 2, 3)) == 1


def test_exports_from_the_store_equal_its_points(store, tmp_path):
    s, yx, cls, sc = store
    s.delete(s.query(0, 0, 300, 300).ids)
    s.add([[4.0, 5.0]], [2])
    cur = np.concatenate([p.yx for p in s.iter_points()])
    csv_t = read_points_csv(export_store_csv(s, tmp_path / "all.csv"))
    gj = read_points_geojson(export_store_geojson(s, tmp_path / "all.geojson"))
    for t in (csv_t, gj):
        assert len(t) == len(cur)
        np.testing.assert_allclose(np.sort(t.yx, axis=0), np.sort(cur, axis=0), atol=0.006)
        names, counts = np.unique(t.classes, return_counts=True)
        assert dict(zip(names, counts)) == {c: int(n) for c, n in zip(CLASSES, s.class_counts())}
    assert json.load(open(tmp_path / "all.geojson"))["properties"]["mpp"] == 0.5
    assert "y_um" in open(tmp_path / "all.csv").readline()


def test_counts_and_densities_in_a_polygon_hand_checked(tmp_path):
    # 4 points inside a 1000 x 2000 px rectangle (0.5 µm/px: 0.5 mm², so 8 nuclei / mm²), 2 outside
    yx = np.array([[10, 10], [500, 1500], [999, 1999], [200, 300], [1200, 50], [50, 2100.0]])
    s = PointStore.create(tmp_path / "p.points", yx, [0, 1, 1, 0, 0, 2], CLASSES, shape=(3000, 3000), mpp=0.5)
    rect = np.array([[0, 0], [0, 2000], [1000, 2000], [1000, 0.0]])
    rows = {r["class"]: r for r in region_summary(s, [rect], "tumour")}
    assert rows["epithelial"]["count"] == 2 and rows["inflammatory"]["count"] == 2 and rows["all"]["count"] == 4
    assert rows["all"]["area_mm²"] == pytest.approx(0.5) and rows["all"]["nuclei_per_mm²"] == pytest.approx(8.0)
    tri = np.array([[0, 0], [0, 2000], [1000, 2000.0]])  # x >= 2y: (500, 1500) and (999, 1999) only
    rows = {r["class"]: r for r in region_summary(s, [tri])}
    assert rows["all"]["count"] == 2 and rows["inflammatory"]["count"] == 2
    assert rows["all"]["area_mm²"] == pytest.approx(0.25)
    whole = {r["class"]: r for r in slide_summary(s)}
    assert whole["all"]["count"] == 6 and whole["all"]["area_mm²"] == pytest.approx(6 * (64 * 0.5e-3) ** 2)
    assert summary_csv_text(slide_summary(s)).splitlines()[0] == "region,class,count,area_mm²,nuclei_per_mm²"
    # the density pyramid: nuclei / mm² per bin, every level the same total
    pyr = density_pyramid(s, min_size=8)
    for i, lvl in enumerate(pyr):
        side_mm = 64 * 2 ** i * 0.5e-3
        assert lvl.sum() * side_mm ** 2 == pytest.approx(6, rel=1e-5)
        assert lvl.shape[1] == pyr[0].shape[1] // 2 ** i


def test_bad_input_is_one_line(tmp_path):
    from napari_histoai.errors import JobError

    with pytest.raises(JobError):
        PointStore(tmp_path)
    with pytest.raises(JobError, match="outside"):
        PointStore.create(tmp_path / "x.points", [[5, 5000]], [0], CLASSES, shape=(100, 100))
    with pytest.raises(JobError, match="finite"):
        PointStore.create(tmp_path / "x.points", [[np.nan, 1]], [0], CLASSES)


def test_cli_detect_writes_a_store_whose_exports_equal_the_csv(sample_path, tmp_path):
    from napari_histoai.cli import main

    direct, store_dir = tmp_path / "p.csv", tmp_path / "p.points"
    assert main(["detect", str(sample_path), "--out", str(direct), "--model", "classical"]) == 0
    assert main(["detect", str(sample_path), "--out", str(store_dir), "--model", "classical"]) == 0
    s = PointStore(store_dir)
    assert s.mpp == pytest.approx(0.499) and s.shape == (1024, 1024)
    a, b = read_points_csv(direct), read_points_csv(export_store_csv(s, tmp_path / "from_store.csv"))

    def rows(t):
        return sorted(zip(np.round(t.yx[:, 0], 2), np.round(t.yx[:, 1], 2), t.classes))

    assert len(a) > 300 and rows(a) == rows(b)
