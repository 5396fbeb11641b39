"""``napari_histoai.evaluation`` and ``histoai evaluate``: numbers checked by hand on tiny inputs,
region and radius handling, bad input as one line, and one run on a real MoNuSeg tile."""

import numpy as np
import pytest

from napari_histoai.cli import main
from napari_histoai.errors import JobError
from napari_histoai.evaluation import (
    PointSet,
    class_ids,
    evaluate,
    table_markdown,
    table_to_csv,
)
from napari_histoai.io.points import read_csv_rows, write_points_csv

# ---------------------------------------------------------------- points, by hand
# truth A(0,0) epi, B(0,20) epi, C(0,40) inf, D(0,60) fib; predictions a(0,1) epi -> A,
# b(0,21) inf -> B (wrong class), c(0,41) inf -> C, e(0,100) epi unmatched. Radius 3 µm at
# 0.5 µm/px = 6 px. TP 3, FP 1, FN 1: F_d = P = R = 6/8.
# HoVer-Net F_c (weights 2, 2, 1, 1), only pairs involving class t:
#   epi: TP_c 1 (aA), FN_c 1 (bB), FP_d 1 (e)  -> 2 / (2 + 2*1 + 1) = 0.4
#   inf: TP_c 1 (cC), FP_c 1 (bB)              -> 2 / (2 + 2*1)     = 0.5
#   fib: FN_d 1 (D)                             -> 0 / 1             = 0
TRUTH = PointSet(np.array([[0, 0], [0, 20], [0, 40], [0, 60]], float),
                 ["epithelial", "epithelial", "inflammatory", "fibroblast"])
PRED = PointSet(np.array([[0, 1], [0, 21], [0, 41], [0, 100]], float),
                ["epithelial", "inflammatory", "inflammatory", "epithelial"])


def test_points_fd_and_hovernet_fc_by_hand():
    r = evaluate(PRED, TRUTH, mpp=0.5, radius_um=3)
    t = r.table
    assert r.kind == "points" and r.radius_px == pytest.approx(6.0)
    assert t["F_d"] == pytest.approx(0.75) and t["P"] == pytest.approx(0.75) and t["R"] == pytest.approx(0.75)
    assert (t["TP"], t["FP"], t["FN"]) == (3, 1, 1)
    assert [k for k in t if k.startswith("F_c")] == ["F_c epithelial", "F_c inflammatory", "F_c fibroblast"]
    assert t["F_c epithelial"] == pytest.approx(0.4)
    assert t["F_c inflammatory"] == pytest.approx(0.5)
    assert t["F_c fibroblast"] == pytest.approx(0.0)
    assert t["mean F_c"] == pytest.approx(0.3)
    assert r.matched.tolist() == [[0, 1], [0, 21], [0, 41]]
    assert r.missed.tolist() == [[0, 60]] and r.false.tolist() == [[0, 100]]
    assert not r.notes


def test_three_points_two_within_radius():
    truth = PointSet(np.array([[10, 10], [10, 50], [10, 90]], float))
    pred = PointSet(np.array([[12, 10], [10, 53], [30, 90]], float))  # 2 px, 3 px, 20 px away
    r = evaluate(pred, truth, mpp=0.5)
    assert r["F_d"] == pytest.approx(2 / 3) and r["P"] == pytest.approx(2 / 3) and r["R"] == pytest.approx(2 / 3)
    assert len(r.matched) == 2 and len(r.missed) == 1 and len(r.false) == 1
    # no classes: F_d/P/R only, and a note says so
    assert "F_c" not in " ".join(r.table) and any("no classes" in n for n in r.notes)


def test_radius_in_um_converts_with_mpp():
    truth = PointSet(np.array([[0.0, 0.0]]))
    pred = PointSet(np.array([[0.0, 5.0]]))  # 5 px apart
    assert evaluate(pred, truth, mpp=0.5, radius_um=3)["TP"] == 1     # 6 px radius
    r = evaluate(pred, truth, mpp=1.0, radius_um=3)                    # 3 px radius
    assert r["TP"] == 0 and r.radius_px == pytest.approx(3.0)
    assert evaluate(pred, truth, mpp=1.0, radius_um=5)["TP"] == 1


def test_region_restricts_the_counts():
    box = (0, 0, 10, 30)  # keeps A, B (truth) and a, b (pred): 2 matches, one wrong class
    r = evaluate(PRED, TRUTH, mpp=0.5, region=box)
    assert (r["TP"], r["FP"], r["FN"], r["truth nuclei"]) == (2, 0, 0, 2)
    assert r["F_d"] == 1.0 and r["F_c epithelial"] == pytest.approx(2 / 4)  # TP_c 1, FN_c 1
    poly = [np.array([[-5, 50], [-5, 110], [5, 110], [5, 50]], float)]  # D and e only
    r = evaluate(PRED, TRUTH, mpp=0.5, region=poly)
    assert (r["TP"], r["FP"], r["FN"]) == (0, 1, 1)
    mask = np.zeros((10, 120), bool)
    mask[:, 35:45] = True  # C and c
    assert evaluate(PRED, TRUTH, mpp=0.5, region=mask)["TP"] == 1


def test_unlabeled_truth_counts_for_detection_only():
    truth = PointSet(TRUTH.yx, ["epithelial", "unlabeled", "inflammatory", "fibroblast"])
    r = evaluate(PRED, truth, mpp=0.5)
    assert r["F_d"] == pytest.approx(0.75)
    assert r["F_c epithelial"] == pytest.approx(2 / 3)  # bB left out: TP_c 1, FP_d 1
    assert r["F_c inflammatory"] == pytest.approx(1.0)


def test_class_ids_follow_known_order_and_ints():
    p, t, names = class_ids(["others", "nucleus"], ["fibroblast", "epithelial"])
    assert names == ["epithelial", "fibroblast", "others"] and p.tolist() == [2, -1] and t.tolist() == [1, 0]
    p, t, names = class_ids([0, 2], [1, -1])
    assert names == ["class 0", "class 1", "class 2"] and t.tolist() == [1, -1]


# ---------------------------------------------------------------- labels, by hand
def squares():
    truth = np.zeros((20, 20), np.uint16)
    truth[0:4, 0:4] = 1
    truth[10:14, 10:14] = 2
    pred = np.zeros((20, 20), np.uint16)
    pred[0:4, 1:5] = 5      # IoU with 1: 12 / 20 = 0.6 -> matched
    pred[10:14, 0:4] = 7    # no overlap -> false; truth 2 missed
    return pred, truth


def test_labels_by_hand():
    pred, truth = squares()
    r = evaluate(pred, truth)
    t = r.table
    assert r.kind == "labels"
    assert t["object-F1"] == pytest.approx(0.5)
    assert t["Dice"] == pytest.approx(24 / 64)
    assert t["AJI"] == pytest.approx(12 / 52)  # 12 / (20 + 16 missed + 16 false)
    assert t["DQ"] == pytest.approx(0.5) and t["SQ"] == pytest.approx(0.6) and t["PQ"] == pytest.approx(0.3)
    assert (t["matched"], t["missed"], t["false"]) == (1, 1, 1)
    assert r.matched_ids.tolist() == [5] and r.missed_ids.tolist() == [2] and r.false_ids.tolist() == [7]
    assert set(np.unique(r.matched)) == {0, 5} and (r.missed == 2).sum() == 16 and (r.false == 7).sum() == 16


def test_labels_region_crops():
    pred, truth = squares()
    r = evaluate(pred, truth, region=(0, 0, 8, 8))
    assert r.origin == (0, 0) and r.matched.shape == (8, 8)
    assert r["object-F1"] == 1.0 and r["Dice"] == pytest.approx(24 / 32) and r["AJI"] == pytest.approx(0.6)
    r = evaluate(pred, truth, region=[np.array([[9, 9], [9, 15], [15, 15], [15, 9]], float)])
    assert (r["matched"], r["missed"], r["false"]) == (0, 1, 0) and r.origin == (9, 9)


def test_binary_masks_are_split_into_objects():
    pred, truth = squares()
    r = evaluate((pred > 0).astype(np.uint8), (truth > 0).astype(np.uint8))
    assert r["truth objects"] == 2 and r["object-F1"] == pytest.approx(0.5) and len(r.notes) == 2


@pytest.mark.parametrize("pred,truth,kw,match", [
    (np.zeros((20, 20), np.uint16), squares()[1], {}, "prediction has no objects"),
    (squares()[0][:10], squares()[1], {}, "20 x 10 px but the ground truth is 20 x 20"),
    (PRED, squares()[1], {"mpp": 0.5}, "cannot compare points"),
    (PointSet(np.zeros((0, 2))), TRUTH, {"mpp": 0.5}, "prediction has no points"),
    (PRED, TRUTH, {}, "no pixel size"),
    (PRED, TRUTH, {"mpp": 0.5, "region": (500, 500, 600, 600)}, "no points of either layer"),
    (np.dstack([squares()[0]] * 3), squares()[1], {}, "not a label image"),
])
def test_bad_input_is_one_line(pred, truth, kw, match):
    with pytest.raises(JobError, match=match) as e:
        evaluate(pred, truth, **kw)
    assert "\n" not in str(e.value)


def test_table_markdown_and_csv(tmp_path):
    r = evaluate(PRED, TRUTH, mpp=0.5)
    md = table_markdown(r)
    assert md.splitlines()[:3] == ["| metric | value |", "|---|---|", "| F_d | 0.7500 |"]
    out = table_to_csv(r, tmp_path / "t.csv")
    rows = read_csv_rows(out)
    assert rows[0] == ["metric", "value"] and ["F_c epithelial", "0.4"] in rows and ["TP", "3"] in rows
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


# ---------------------------------------------------------------- CLI
def _write_points(path, pts: PointSet, mpp=None):
    write_points_csv(path, pts.yx, pts.classes or ["nucleus"] * len(pts), mpp=mpp)
    return str(path)


def test_cli_points_prints_table_and_writes_csv(tmp_path, capsys):
    pred = _write_points(tmp_path / "pred.csv", PRED, mpp=0.5)
    truth = _write_points(tmp_path / "truth.csv", TRUTH, mpp=0.5)  # mpp from the files
    out = tmp_path / "table.csv"
    assert main(["evaluate", pred, truth, "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| F_d | 0.7500 |" in text and "| F_c epithelial | 0.4000 |" in text and "| mean F_c | 0.3000 |" in text
    assert ["F_d", "0.75"] in read_csv_rows(out)
    # --mpp overrides the files': 1 µm at 2 µm/px is a 0.5 px radius, too small for the 1 px offsets
    assert main(["evaluate", pred, truth, "--radius-um", "1", "--mpp", "2"]) == 0
    assert "| TP | 0 |" in capsys.readouterr().out
    assert main(["evaluate", pred, truth, "--region", "0,0,10,30"]) == 0
    assert "| TP | 2 |" in capsys.readouterr().out


def test_cli_labels(tmp_path, capsys):
    import tifffile

    pred, truth = squares()
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "truth.tif")]) == 0
    out = capsys.readouterr().out
    assert "| object-F1 | 0.5000 |" in out and "| AJI | 0.2308 |" in out and "| Dice | 0.3750 |" in out


def _bad_files(tmp_path):
    import tifffile

    pred, truth = squares()
    tifffile.imwrite(tmp_path / "a.tif", pred)
    tifffile.imwrite(tmp_path / "small.tif", pred[:10])
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((20, 20), np.uint16))
    _write_points(tmp_path / "p.csv", PRED)
    (tmp_path / "bad.csv").write_text("y,x,class\n1,oops,epithelial\n")
    (tmp_path / "none.csv").write_text("y,x,class\n")


@pytest.mark.parametrize("args,match", [
    (["small.tif", "a.tif"], "20 x 10 px but the ground truth is 20 x 20"),
    (["empty.tif", "a.tif"], "prediction has no objects"),
    (["bad.csv", "p.csv", "--mpp", "0.5"], "bad.csv line 2"),
    (["none.csv", "p.csv", "--mpp", "0.5"], "prediction has no points"),
    (["p.csv", "p.csv"], "no pixel size"),
    (["p.csv", "a.tif"], "cannot compare points"),
    (["p.csv", "missing.csv"], "no such file"),
    (["p.csv", "p.csv", "--radius-um", "-1"], "must be > 0"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch, args, match):
    _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", *args]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and match in err[0], err
    assert cap.out == ""


def test_cli_on_a_real_monuseg_tile(data_dir, tmp_path, capsys):
    import tifffile
    from scipy import ndimage

    mask_path = data_dir / "monuseg" / "train" / "masks" / "TCGA-21-5784-01Z-00-DX1.tif"
    points = data_dir / "monuseg" / "train" / "points" / "TCGA-21-5784-01Z-00-DX1.csv"
    if not mask_path.is_file() or not points.is_file():
        pytest.skip("MoNuSeg tile not available")
    assert main(["evaluate", str(mask_path), str(mask_path)]) == 0
    out = capsys.readouterr().out
    for m in ("Dice", "AJI", "PQ", "object-F1"):
        assert f"| {m} | 1.0000 |" in out
    # every nucleus eroded by 2 px: fewer pixels, same objects mostly, all scores below 1
    m = tifffile.imread(mask_path)
    eroded = np.where(ndimage.grey_erosion(m, size=5) == m, m, 0).astype(m.dtype)
    tifffile.imwrite(tmp_path / "eroded.tif", eroded)
    out_csv = tmp_path / "t.csv"
    assert main(["evaluate", str(tmp_path / "eroded.tif"), str(mask_path), "--csv", str(out_csv)]) == 0
    vals = {k: float(v) for k, v in read_csv_rows(out_csv)[1:]}
    assert 0.3 < vals["Dice"] < 1 and 0.2 < vals["AJI"] < vals["Dice"] and vals["PQ"] < 1
    assert vals["truth objects"] == len(np.unique(m)) - 1
    # the tile's centroids against themselves (MoNuSeg: 40x, ~0.25 µm/px)
    assert main(["evaluate", str(points), str(points), "--mpp", "0.25"]) == 0
    cap = capsys.readouterr()
    assert "| F_d | 1.0000 |" in cap.out and "no classes" in cap.err
